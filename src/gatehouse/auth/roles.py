"""Roles, ordered: user < monitor < admin < superadmin."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    USER = "user"
    MONITOR = "monitor"
    ADMIN = "admin"
    SUPERADMIN = "superadmin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        """Whether this role includes everything `other` may do."""
        return self.rank >= other.rank


_RANK = {Role.USER: 0, Role.MONITOR: 1, Role.ADMIN: 2, Role.SUPERADMIN: 3}


class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    PENDING = "pending"
