"""The principal cache: a warm API key costs no database read; bus signals empty it on every replica.

The same cache keeps the people a front-end's key acts for (accounts/acting): there an entry is a key and an
email, its principal the person's, and KEY_CHANGED drops every person cached under that key.

While Redis is unreachable those signals cannot arrive: entries then live at most OUTAGE_TTL_SECONDS, so a key
revoked (or a user disabled) on another replica is refused here within seconds all the same; once the bus is
subscribed again (Signal.RECONNECTED) the cache starts over.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from gatehouse.auth.principal import Principal
from gatehouse.core.bus import Signal

OUTAGE_TTL_SECONDS = 5.0  # the longest an entry lives while Redis (and so the bus) is unreachable


class AuthCache:
    """key hash -> Principal, bounded (least recently used out) and expiring; emptied by bus events.

    Unknown keys are remembered too, briefly and in a smaller map of their own, so a flood of random keys
    costs few database reads yet never pushes out the keys people really use.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = 100_000,
        negative_ttl_seconds: float = 30.0,
        max_negative_entries: int = 10_000,
    ):
        self.ttl = ttl_seconds
        self.normal_ttl = ttl_seconds
        self.negative_ttl = negative_ttl_seconds
        self.max_entries = max_entries
        self.max_negative_entries = max_negative_entries
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._by_user: dict[int, set[str]] = {}
        self._by_key: dict[int, set[str]] = {}  # several entries per key: the people a front-end's key acts for
        # Lookups under way: concurrent callers of one cold key share a single database read.
        self._loading: dict[str, tuple[int, asyncio.Future[Principal | None]]] = {}
        # Bumped by every invalidation: a lookup that started before one must not be cached after it.
        self.generation = 0

    def get(self, key_hash: str) -> tuple[bool, Principal | None]:
        """(hit, principal); a hit with None means the key is known not to exist."""
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is not None:
            principal, expires = entry
            if expires < now:
                self._drop(key_hash)
                return False, None
            self._entries.move_to_end(key_hash)
            return True, principal
        negative_expires = self._negative.get(key_hash)
        if negative_expires is not None:
            if negative_expires < now:
                del self._negative[key_hash]
                return False, None
            return True, None
        return False, None

    def put(self, key_hash: str, principal: Principal | None, *, generation: int) -> None:
        """Remember a lookup result (None: no such key) begun at `generation`."""
        if self.ttl <= 0 or generation != self.generation:
            return
        self._drop(key_hash)
        now = time.monotonic()
        if principal is None:
            self._negative[key_hash] = now + min(self.ttl, self.negative_ttl)
            while len(self._negative) > self.max_negative_entries:
                self._negative.popitem(last=False)
            return
        self._entries[key_hash] = (principal, now + self.ttl)
        self._by_user.setdefault(principal.user_id, set()).add(key_hash)
        if principal.key_id is not None:
            self._by_key.setdefault(principal.key_id, set()).add(key_hash)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    async def lookup(self, key_hash: str, load: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
        """The cached result, else `load()`'s, run once for all the callers asking at the same time."""
        hit, principal = self.get(key_hash)
        if hit:
            return principal
        generation = self.generation
        loading = self._loading.get(key_hash)
        # A lookup begun before an invalidation may return what was just revoked: start a fresh one.
        if loading is None or loading[0] != generation:
            future = asyncio.ensure_future(self._load(key_hash, load, generation))
            loading = (generation, future)
            self._loading[key_hash] = loading
            future.add_done_callback(lambda done: self._loaded(key_hash, done))
        # Shielded: a caller that goes away does not cancel the read the others wait for.
        return await asyncio.shield(loading[1])

    async def _load(
        self, key_hash: str, load: Callable[[], Awaitable[Principal | None]], generation: int
    ) -> Principal | None:
        principal = await load()
        self.put(key_hash, principal, generation=generation)
        return principal

    def _loaded(self, key_hash: str, future: asyncio.Future[Principal | None]) -> None:
        loading = self._loading.get(key_hash)
        if loading is not None and loading[1] is future:
            del self._loading[key_hash]
        if not future.cancelled():
            future.exception()  # retrieved here too, in case every waiter went away

    def _drop(self, key_hash: str) -> None:
        self._negative.pop(key_hash, None)
        entry = self._entries.pop(key_hash, None)
        if entry is None:
            return
        principal = entry[0]
        hashes = self._by_user.get(principal.user_id)
        if hashes is not None:
            hashes.discard(key_hash)
            if not hashes:
                del self._by_user[principal.user_id]
        if principal.key_id is not None:
            hashes = self._by_key.get(principal.key_id)
            if hashes is not None:
                hashes.discard(key_hash)
                if not hashes:
                    del self._by_key[principal.key_id]

    def forget_user(self, user_id: int) -> None:
        """Drop every cached key of a user."""
        for key_hash in list(self._by_user.get(user_id, ())):
            self._drop(key_hash)

    def forget_key(self, key_id: int) -> None:
        """Drop one cached key (and every person cached under it)."""
        for key_hash in list(self._by_key.get(key_id, ())):
            self._drop(key_hash)

    def clear(self) -> None:
        """Drop everything (after missing bus events)."""
        self._entries.clear()
        self._negative.clear()
        self._by_user.clear()
        self._by_key.clear()

    def on_redis(self, up: bool) -> None:
        """The shared Redis state switched: while it is down, no entry outlives OUTAGE_TTL_SECONDS (those cached
        already included), since the signals that would empty it cannot arrive."""
        if up:
            self.ttl = self.normal_ttl
            return
        self.ttl = min(self.normal_ttl, OUTAGE_TTL_SECONDS)
        deadline = time.monotonic() + self.ttl
        for key_hash, (principal, expires) in list(self._entries.items()):
            if expires > deadline:
                self._entries[key_hash] = (principal, deadline)
        for key_hash, expires in list(self._negative.items()):
            if expires > deadline:
                self._negative[key_hash] = deadline

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler."""
        if kind in (Signal.KEY_CHANGED, Signal.USER_CHANGED, Signal.RECONNECTED):
            self.generation += 1
        if kind == Signal.KEY_CHANGED:
            self.forget_key(int(data["key_id"]))
        elif kind == Signal.USER_CHANGED:
            self.forget_user(int(data["user_id"]))
        elif kind == Signal.RECONNECTED:
            self.clear()

    def __len__(self) -> int:
        return len(self._entries) + len(self._negative)
