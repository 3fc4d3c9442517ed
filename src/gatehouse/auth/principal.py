"""Who is calling: a user, through an API key or a console session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network

from gatehouse.auth.roles import Role, UserStatus


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user, through an API key or a console session."""

    user_id: int
    email: str
    role: Role
    status: UserStatus
    key_id: int | None = None
    key_expires_at: datetime | None = None
    session_id: int | None = None
    blocked_at: datetime | None = None
    blocked_until: datetime | None = None
    # The groups whose access rules (and limits) apply: the key's own group when it is bound to one, else every
    # group the user belongs to.
    group_ids: tuple[int, ...] = ()
    key_group_id: int | None = None
    # The key's own restrictions (None: none): model patterns, client surfaces, client networks, requests per
    # minute; and whether it is a front-end's key that names the person each request is for.
    key_models: tuple[str, ...] | None = None
    key_surfaces: frozenset[str] | None = None
    key_networks: tuple[IPv4Network | IPv6Network, ...] | None = None
    key_rate: int | None = None
    acts_for_users: bool = False

    @property
    def via_key(self) -> bool:
        return self.key_id is not None

    def blocked_now(self, now: datetime) -> bool:
        """Blocked at `now` (a timed block ends by itself when blocked_until passes)."""
        return self.blocked_at is not None and (self.blocked_until is None or self.blocked_until > now)
