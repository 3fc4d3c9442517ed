"""Who is calling: the Principal, and the cache that makes a warm API key cost no database read."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatehouse.accounts.roles import Role, UserStatus
from gatehouse.ops.bus import RECONNECTED

# Bus event kinds that invalidate cached principals.
KEY_CHANGED = "key.changed"  # {"key_id": int}
USER_CHANGED = "user.changed"  # {"user_id": int}


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

    @property
    def via_key(self) -> bool:
        return self.key_id is not None


class AuthCache:
    """key hash -> Principal, bounded and expiring; emptied by bus events on any replica's change."""

    def __init__(self, *, ttl_seconds: float, max_entries: int = 100_000, negative_ttl_seconds: float = 30.0):
        self.ttl = ttl_seconds
        self.negative_ttl = negative_ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()
        self._by_user: dict[int, set[str]] = {}
        self._by_key: dict[int, str] = {}
        # Bumped by every invalidation: a lookup that started before one must not be cached after it.
        self.generation = 0

    def get(self, key_hash: str) -> tuple[bool, Principal | None]:
        """(hit, principal); a hit with None means the key is known not to exist."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return False, None
        principal, expires = entry
        if expires < time.monotonic():
            self._drop(key_hash)
            return False, None
        return True, principal

    def put(self, key_hash: str, principal: Principal | None, *, generation: int) -> None:
        """Remember a lookup result (None: no such key) begun at `generation`."""
        if self.ttl <= 0 or generation != self.generation:
            return
        ttl = self.ttl if principal is not None else min(self.ttl, self.negative_ttl)
        self._drop(key_hash)
        self._entries[key_hash] = (principal, time.monotonic() + ttl)
        if principal is not None:
            self._by_user.setdefault(principal.user_id, set()).add(key_hash)
            if principal.key_id is not None:
                self._by_key[principal.key_id] = key_hash
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key_hash: str) -> None:
        entry = self._entries.pop(key_hash, None)
        if entry is None or entry[0] is None:
            return
        principal = entry[0]
        hashes = self._by_user.get(principal.user_id)
        if hashes is not None:
            hashes.discard(key_hash)
            if not hashes:
                del self._by_user[principal.user_id]
        if principal.key_id is not None and self._by_key.get(principal.key_id) == key_hash:
            del self._by_key[principal.key_id]

    def forget_user(self, user_id: int) -> None:
        """Drop every cached key of a user."""
        for key_hash in list(self._by_user.get(user_id, ())):
            self._drop(key_hash)

    def forget_key(self, key_id: int) -> None:
        """Drop one cached key."""
        key_hash = self._by_key.get(key_id)
        if key_hash is not None:
            self._drop(key_hash)

    def clear(self) -> None:
        """Drop everything (after missing bus events)."""
        self._entries.clear()
        self._by_user.clear()
        self._by_key.clear()

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler."""
        if kind in (KEY_CHANGED, USER_CHANGED, RECONNECTED):
            self.generation += 1
        if kind == KEY_CHANGED:
            self.forget_key(int(data["key_id"]))
        elif kind == USER_CHANGED:
            self.forget_user(int(data["user_id"]))
        elif kind == RECONNECTED:
            self.clear()

    def __len__(self) -> int:
        return len(self._entries)
