"""Rate limits: named rules with defaults from settings and runtime overrides, enforced by a moving window.

In-process for one replica; in Redis (REDIS_URL) for many, where the `limits` library's Lua scripts make
each check atomic, so three replicas together admit the limit, not three times it. Overrides live in the
database and every replica reloads them when the bus says they changed (and every RELOAD_SECONDS anyway).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.core.bus import Signal
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import RATE_LIMIT_HITS
from gatehouse.core.tasks import stop as stop_task
from gatehouse.limits.errors import RateLimited
from gatehouse.limits.models import RateLimitOverride
from gatehouse.settings import Settings

log = get_logger("gatehouse.ratelimit")
RELOAD_SECONDS = 30.0
HIT_EVENT = "rate_limit.hit"  # live feed event
HIT_EVENT_SECONDS = 10.0  # one client retrying in a loop announces itself this often at most, not per refusal
HIT_EVENT_MEMORY = 10000  # (rule, identity) pairs remembered for that; forgotten all at once beyond


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A named rate limit: what it counts, per whom, over which window."""

    name: str
    per: Literal["user", "ip", "account"]  # account: a login email, hashed (lockout.account_identity)
    window: Literal["minute", "hour"]
    description: str
    default: Callable[[Settings], int | None]

    @property
    def window_seconds(self) -> int:
        return 60 if self.window == "minute" else 3600


RULES: dict[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        RuleSpec(
            "user_per_minute",
            "user",
            "minute",
            "Gateway requests (chat, embeddings) per user per minute (RATE_LIMIT_PER_MINUTE)",
            lambda s: s.rate_limit_per_minute,
        ),
        RuleSpec(
            "ip_per_minute",
            "ip",
            "minute",
            "Unauthenticated requests (login, signup) per client IP per minute (RATE_LIMIT_IP_PER_MINUTE)",
            lambda s: s.rate_limit_ip_per_minute,
        ),
        RuleSpec("chat", "user", "hour", "Chat requests per user per hour", lambda s: None),
        RuleSpec("embeddings", "user", "hour", "Embeddings requests per user per hour", lambda s: None),
        RuleSpec("login", "ip", "hour", "Login attempts per client IP per hour", lambda s: 100),
        RuleSpec("signup", "ip", "hour", "Sign-ups per client IP per hour", lambda s: 20),
        RuleSpec(
            "login_failures_account",
            "account",
            "hour",
            "Failed logins per account (email) per hour before the account's logins are locked",
            lambda s: 10,
        ),
        RuleSpec(
            "login_failures_ip",
            "ip",
            "hour",
            "Failed logins per client IP per hour before logins from it are locked",
            lambda s: 50,
        ),
        RuleSpec("key_create", "user", "hour", "API keys created per user per hour", lambda s: 30),
        RuleSpec("invite_create", "user", "hour", "Invites created per admin per hour", lambda s: 100),
        RuleSpec("export", "user", "hour", "Data exports per user per hour", lambda s: 10),
    )
}


def user_identity(user_id: int) -> str:
    """The rate-limit identity of a user (rules counted per user)."""
    return f"u{user_id}"


def ip_identity(ip: str | None) -> str:
    """The rate-limit identity of a client address (rules counted per IP)."""
    return f"ip{ip or 'unknown'}"


@dataclass(frozen=True, slots=True)
class Item:
    """A rule's limit: `amount` hits per `seconds`, counted under `namespace` (the rule's name)."""

    namespace: str
    amount: int
    seconds: int

    def get_expiry(self) -> int:
        return self.seconds


class WindowStats(NamedTuple):
    """When the oldest hit in the window leaves it (epoch seconds), and how many hits remain."""

    reset_time: float
    remaining: int


class Windows(Protocol):
    async def hit(self, item: Item, identity: str) -> bool: ...

    async def test(self, item: Item, identity: str) -> bool: ...

    async def get_window_stats(self, item: Item, identity: str) -> WindowStats: ...

    async def reset(self) -> None: ...


class RedisWindows:
    """Moving windows in Redis, shared by every replica: the `limits` library's atomic Lua scripts.

    Imported only with REDIS_URL: one process on SQLite never loads `limits` (a tenth of a second at start).
    """

    def __init__(self, settings: Settings) -> None:
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        self.storage = RedisStorage(
            _async_uri(settings.redis_url),
            implementation="redispy",
            key_prefix=settings.redis_prefix + "rl",
            socket_connect_timeout=5,
            socket_timeout=5,
        )
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._items: dict[Item, Any] = {}

    def _limits_item(self, item: Item) -> Any:
        found = self._items.get(item)
        if found is None:
            from limits import RateLimitItemPerHour, RateLimitItemPerMinute

            cls = RateLimitItemPerMinute if item.seconds == 60 else RateLimitItemPerHour
            found = self._items[item] = cls(item.amount, namespace=item.namespace)
        return found

    async def hit(self, item: Item, identity: str) -> bool:
        return bool(await self._limiter.hit(self._limits_item(item), identity))

    async def test(self, item: Item, identity: str) -> bool:
        return bool(await self._limiter.test(self._limits_item(item), identity))

    async def get_window_stats(self, item: Item, identity: str) -> WindowStats:
        stats = await self._limiter.get_window_stats(self._limits_item(item), identity)
        return WindowStats(stats.reset_time, stats.remaining)

    async def reset(self) -> None:
        await self.storage.reset()


class MemoryWindows:
    """Exact moving windows in one process: per (rule, identity) the times of its hits, oldest first.

    A hit drops the times that left the window and appends its own: amortised O(1) whatever the limit. (The
    `limits` library's memory storage inserts at the front of a list and re-sorts it in a thread, which costs
    O(hits in the window) per hit: at a limit of 10,000 a minute that was a tenth of the gateway's CPU.)
    Windows are kept per rule, limit and identity, as the `limits` library keys them in Redis: a changed limit
    starts counting afresh on either backend.
    """

    def __init__(self) -> None:
        self._windows: dict[tuple[str, int, str], tuple[deque[float], float]] = {}

    def _window(self, item: Item, identity: str, now: float) -> deque[float]:
        key = (item.namespace, item.amount, identity)
        entry = self._windows.get(key)
        seconds = float(item.get_expiry())
        if entry is None:
            entry = self._windows[key] = (deque(), seconds)
        hits = entry[0]
        cutoff = now - seconds
        while hits and hits[0] <= cutoff:
            hits.popleft()
        return hits

    async def hit(self, item: Item, identity: str) -> bool:
        now = time.time()
        hits = self._window(item, identity, now)
        if len(hits) >= item.amount:
            return False
        hits.append(now)
        return True

    async def test(self, item: Item, identity: str) -> bool:
        return len(self._window(item, identity, time.time())) < item.amount

    async def get_window_stats(self, item: Item, identity: str) -> WindowStats:
        now = time.time()
        hits = self._window(item, identity, now)
        reset = hits[0] + item.get_expiry() if hits else now
        return WindowStats(reset, max(0, item.amount - len(hits)))

    def sweep(self) -> int:
        """Forget the identities whose windows are empty now; how many were forgotten."""
        now = time.time()
        stale = [key for key, (hits, seconds) in self._windows.items() if not hits or hits[-1] <= now - seconds]
        for key in stale:
            del self._windows[key]
        return len(stale)

    async def reset(self) -> None:
        self._windows.clear()


@dataclass(frozen=True, slots=True)
class RuleState:
    """A rule with its limit in force."""

    spec: RuleSpec
    limit: int | None
    overridden: bool


class RateLimiter:
    """Checks named rules for an identity (a user id or a client IP)."""

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], *, feed: EventFeed | None = None
    ) -> None:
        self.settings = settings
        self.feed = feed
        self._announced: dict[tuple[str, str], float] = {}
        self._sessionmaker = sessionmaker
        self._memory: MemoryWindows | None = None
        self._limiter: Windows
        if settings.redis_url:
            self._limiter = RedisWindows(settings)
        else:
            self._memory = self._limiter = MemoryWindows()
        self._overrides: dict[str, int | None] = {}
        self._items: dict[tuple[str, int], Item] = {}
        self._task: asyncio.Task[None] | None = None

    # --- rules -----------------------------------------------------------------------------------

    def limit_of(self, name: str) -> int | None:
        """The limit in force for a rule (None: unlimited)."""
        if name in self._overrides:
            return self._overrides[name]
        return RULES[name].default(self.settings)

    def rules(self) -> list[RuleState]:
        """Every rule with its limit in force."""
        return [RuleState(spec, self.limit_of(name), name in self._overrides) for name, spec in RULES.items()]

    async def reload(self) -> None:
        """Read the overrides from the database."""
        async with self._sessionmaker() as session:
            rows = (await session.execute(select(RateLimitOverride.name, RateLimitOverride.limit))).all()
        self._overrides = {name: limit for name, limit in rows if name in RULES}

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: another replica (or this one) changed the overrides."""
        if kind in (Signal.LIMITS_CHANGED, Signal.RECONNECTED):
            await self.reload()

    async def start(self) -> None:
        """Load overrides and keep them fresh even if a bus event is missed."""
        await self.reload()
        self._task = asyncio.create_task(self._reload_forever(), name="gatehouse-ratelimit-reload")

    async def close(self) -> None:
        """Stop reloading."""
        await stop_task(self._task)

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            if self._memory is not None:
                self._memory.sweep()
            try:
                await self.reload()
            except Exception as exc:
                log.warning("rate_limit_reload_failed", error=str(exc))

    # --- enforcement -----------------------------------------------------------------------------

    def _item(self, spec: RuleSpec, limit: int) -> Item:
        key = (spec.name, limit)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = Item(spec.name, limit, spec.window_seconds)
        return item

    async def hit(self, name: str, identity: str) -> None:
        """Count one request against rule `name` for `identity`; raise a 429 when over the limit."""
        limit = self.limit_of(name)
        if limit is None:
            return
        spec = RULES[name]
        item = self._item(spec, limit)
        if limit > 0 and await self._limiter.hit(item, identity):
            return
        RATE_LIMIT_HITS.labels(action=name).inc()
        self._announce(spec, limit, identity)
        reset = spec.window_seconds
        if limit > 0:
            stats = await self._limiter.get_window_stats(item, identity)
            reset = max(1, math.ceil(stats.reset_time - time.time()))
        who = "you" if spec.per == "user" else "your address"
        raise RateLimited(
            f"Rate limit `{name}` reached: {limit} per {spec.window} for {who}. Retry in {reset} s.",
            param=name,
            headers={
                "retry-after": str(reset),
                "x-ratelimit-limit": str(limit),
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(reset),
            },
        )

    def _announce(self, spec: RuleSpec, limit: int, identity: str) -> None:
        """Tell the live feed, once per rule and identity every HIT_EVENT_SECONDS."""
        if self.feed is None:
            return
        now = time.monotonic()
        pair = (spec.name, identity)
        if now - self._announced.get(pair, -HIT_EVENT_SECONDS) < HIT_EVENT_SECONDS:
            return
        if len(self._announced) >= HIT_EVENT_MEMORY:
            self._announced.clear()
        self._announced[pair] = now
        self.feed.publish(
            HIT_EVENT,
            {"action": spec.name, "subject": identity, "per": spec.per, "limit": limit, "window": spec.window},
        )

    async def allows(self, name: str, identity: str) -> bool:
        """Whether rule `name` would admit one more hit for `identity` (counts nothing)."""
        limit = self.limit_of(name)
        if limit is None:
            return True
        return limit > 0 and await self._limiter.test(self._item(RULES[name], limit), identity)

    async def count(self, name: str, identity: str) -> None:
        """Count one event (e.g. a failed login) without refusing anything; a full window stays full."""
        limit = self.limit_of(name)
        if limit is not None and limit > 0:
            await self._limiter.hit(self._item(RULES[name], limit), identity)

    async def used(self, name: str, identity: str) -> int:
        """How many events rule `name` holds for `identity` in its current window (0 when unlimited)."""
        limit = self.limit_of(name)
        if limit is None or limit <= 0:
            return 0
        stats = await self._limiter.get_window_stats(self._item(RULES[name], limit), identity)
        return max(0, limit - stats.remaining)

    async def retry_in(self, name: str, identity: str) -> int:
        """Seconds until rule `name` admits `identity` again (at least 1)."""
        spec = RULES[name]
        limit = self.limit_of(name)
        if limit is None or limit <= 0:
            return spec.window_seconds
        stats = await self._limiter.get_window_stats(self._item(spec, limit), identity)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def sweep(self) -> int:
        """Drop this process's stale rate-limit data: empty windows (memory) and old live-feed throttle entries.

        Redis windows expire by themselves (each key carries its window as TTL), so there is nothing to sweep there.
        """
        removed = self._memory.sweep() if self._memory is not None else 0
        cutoff = time.monotonic() - HIT_EVENT_SECONDS
        stale = [pair for pair, at in self._announced.items() if at < cutoff]
        for pair in stale:
            del self._announced[pair]
        return removed + len(stale)

    async def clear(self) -> None:
        """Forget every window (tests and `gatehouse` repairs)."""
        await self._limiter.reset()


def _async_uri(url: str) -> str:
    """The `limits` library names its async Redis backends with an `async+` scheme."""
    return url if url.startswith("async+") else "async+" + url
