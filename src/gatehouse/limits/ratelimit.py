"""Rate limits: named rules with defaults from settings and runtime overrides, enforced by a moving window.

In-process for one replica; in Redis (REDIS_URL) for many, where the `limits` library's Lua scripts make
each check atomic, so three replicas together admit the limit, not three times it. Overrides live in the
database and every replica reloads them when the bus says they changed (and every RELOAD_SECONDS anyway).

While Redis is unreachable (core/redis_state.py), no request waits for it: RATE_LIMIT_REDIS_FALLBACK decides.
`local` (the default): each replica enforces its share of every limit in memory, ceil(limit / live replicas),
the replicas counted from the heartbeat table when the outage begins and every REPLICAS_REFRESH_SECONDS during
it, so together they still admit about the limit. `refuse`: what a rate limit applies to is refused with 503
`rate_limiter_unavailable`. Either way the bookkeeping of failed logins goes on in the local shares. Windows
start afresh at each switch (Redis does not hear of what was counted without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.core.bus import Signal
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import RATE_LIMIT_FALLBACK, RATE_LIMIT_HITS, child
from gatehouse.core.redis_state import RedisState, RedisUnavailable, outage_errors
from gatehouse.core.tasks import stop as stop_task
from gatehouse.jobs.replicas import live_replicas
from gatehouse.limits.errors import RateLimited, RateLimiterUnavailable
from gatehouse.limits.models import RateLimitOverride
from gatehouse.settings import RedisFallback, Settings

log = get_logger("gatehouse.ratelimit")
RELOAD_SECONDS = 30.0
HIT_EVENT = "rate_limit.hit"  # live feed event
HIT_EVENT_SECONDS = 10.0  # one client retrying in a loop announces itself this often at most, not per refusal
HIT_EVENT_MEMORY = 10000  # (rule, identity) pairs remembered for that; forgotten all at once beyond
REPLICAS_REFRESH_SECONDS = 5.0  # while Redis is down, the live replicas are counted again this often
REPLICAS_WAIT_SECONDS = 2.0  # the first requests of an outage wait at most this long for the first count
REFUSE_RETRY_SECONDS = 5  # Retry-After of a 503 rate_limiter_unavailable
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A named rate limit: what it counts, per whom, over which window."""

    name: str
    per: Literal["user", "key", "ip", "account"]  # account: a login email, hashed (lockout.account_identity)
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
            "key_per_minute",
            "key",
            "minute",
            "Gateway requests per API key per minute, for every key (a key's own rate_per_minute applies when lower)",
            lambda s: None,
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


def key_identity(key_id: int) -> str:
    """The rate-limit identity of an API key (rules counted per key)."""
    return f"k{key_id}"


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

    Imported only with REDIS_URL: one process on SQLite never loads `limits` (a tenth of a second at start). Every
    call gives up after the shared state's short timeouts and raises RedisUnavailable, so the caller falls back.
    """

    def __init__(self, settings: Settings, state: RedisState) -> None:
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        self.storage = RedisStorage(
            _async_uri(settings.redis_url),
            implementation="redispy",
            key_prefix=settings.redis_prefix + "rl",
            **state.client_options(),
        )
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._items: dict[Item, Any] = {}
        self._errors = outage_errors()
        # A script that was not loaded yet costs a second round trip: both fit in the deadline.
        self._deadline = state.timeout * 3

    def _limits_item(self, item: Item) -> Any:
        found = self._items.get(item)
        if found is None:
            from limits import RateLimitItemPerHour, RateLimitItemPerMinute

            cls = RateLimitItemPerMinute if item.seconds == 60 else RateLimitItemPerHour
            found = self._items[item] = cls(item.amount, namespace=item.namespace)
        return found

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._deadline):
                return await work
        except self._errors as exc:
            raise RedisUnavailable(str(exc)) from exc

    async def hit(self, item: Item, identity: str) -> bool:
        return bool(await self._call(self._limiter.hit(self._limits_item(item), identity)))

    async def test(self, item: Item, identity: str) -> bool:
        return bool(await self._call(self._limiter.test(self._limits_item(item), identity)))

    async def get_window_stats(self, item: Item, identity: str) -> WindowStats:
        stats = await self._call(self._limiter.get_window_stats(self._limits_item(item), identity))
        return WindowStats(stats.reset_time, stats.remaining)

    async def reset(self) -> None:
        await self._call(self.storage.reset())


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

    def _key(self, item: Item, identity: str) -> tuple[str, int, str]:
        return item.namespace, item.amount, identity

    def _window(self, item: Item, identity: str, now: float) -> deque[float]:
        key = self._key(item, identity)
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


class ShareWindows(MemoryWindows):
    """A replica's share of each limit while Redis is down: kept per rule, limit and identity whatever the share,
    so that when the share changes (a replica joined or left) what was already admitted still counts."""

    def _key(self, item: Item, identity: str) -> tuple[str, int, str]:
        return item.namespace, 0, identity


@dataclass(frozen=True, slots=True)
class RuleState:
    """A rule with its limit in force."""

    spec: RuleSpec
    limit: int | None
    overridden: bool


class RateLimiter:
    """Checks named rules for an identity (a user id or a client IP)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        feed: EventFeed | None = None,
        redis: RedisState | None = None,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self._announced: dict[tuple[str, str], float] = {}
        self._sessionmaker = sessionmaker
        self._memory: MemoryWindows | None = None
        self._redis: RedisWindows | None = None
        self._owns_state = redis is None
        self.redis_state = redis if redis is not None else RedisState(settings.redis_url)
        if settings.redis_url:
            self._redis = RedisWindows(settings, self.redis_state)
            self.redis_state.subscribe(self._on_redis)
        else:
            self._memory = MemoryWindows()
        self.fallback = settings.rate_limit_redis_fallback
        self._shares = ShareWindows()  # used only while Redis is down
        self.replicas = 1  # live replicas the local shares divide by (counted while Redis is down)
        self._counted = asyncio.Event()
        self._counting: asyncio.Task[None] | None = None
        self._closed = False
        self._overrides: dict[str, int | None] = {}
        self._items: dict[tuple[str, int], Item] = {}
        self._task: asyncio.Task[None] | None = None

    # --- rules -----------------------------------------------------------------------------------

    @property
    def key_limited(self) -> bool:
        """Whether every key has a rate limit (`key_per_minute` set): else only keys with their own are counted."""
        return self.limit_of("key_per_minute") is not None

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
        """Stop reloading (and counting replicas)."""
        self._closed = True
        await stop_task(self._task)
        await stop_task(self._counting)
        if self._owns_state:
            await self.redis_state.close()

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            self.sweep()
            try:
                await self.reload()
            except Exception as exc:
                log.warning("rate_limit_reload_failed", error=str(exc))

    # --- without Redis ---------------------------------------------------------------------------

    @property
    def mode(self) -> Literal["memory", "redis", "local", "refuse"]:
        """Where limits are counted now: `memory` (one replica), `redis`, or the fallback in use (`local`, `refuse`)."""
        if self._redis is None:
            return "memory"
        if self.redis_state.up:
            return "redis"
        return "refuse" if self.fallback is RedisFallback.REFUSE else "local"

    def _on_redis(self, up: bool) -> None:
        """The shared Redis state switched: count the live replicas while Redis is down."""
        if self._counting is not None:
            self._counting.cancel()
            self._counting = None
        if not up and not self._closed:
            self._counted.clear()
            self._counting = asyncio.get_running_loop().create_task(
                self._count_replicas_forever(), name="gatehouse-ratelimit-replicas"
            )

    async def _count_replicas_forever(self) -> None:
        while True:
            try:
                async with self._sessionmaker() as session:
                    self.replicas = max(1, len(await live_replicas(session)))
                log.info("rate_limit_fallback", policy=str(self.fallback), replicas=self.replicas)
            except Exception as exc:  # the database too: the last count stands (the quota refuses meanwhile)
                log.warning("rate_limit_replicas_unknown", error=f"{type(exc).__name__}: {exc}", replicas=self.replicas)
            self._counted.set()
            await asyncio.sleep(REPLICAS_REFRESH_SECONDS)

    async def _share(self, spec: RuleSpec, limit: int, *, admission: bool) -> Item:
        """This replica's share of a limit while Redis is down; refused (503) under `refuse` when admitting."""
        if admission and self.fallback is RedisFallback.REFUSE:
            child(RATE_LIMIT_FALLBACK, spec.name, "refused").inc()
            raise RateLimiterUnavailable(
                "Rate limits cannot be checked right now (Redis is unavailable and RATE_LIMIT_REDIS_FALLBACK=refuse). "
                f"Retry in {REFUSE_RETRY_SECONDS} s.",
                param=spec.name,
                headers={"retry-after": str(REFUSE_RETRY_SECONDS)},
            )
        if not self._counted.is_set():  # the first requests of an outage wait for one count, not one each
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPLICAS_WAIT_SECONDS):
                    await self._counted.wait()
        return Item(f"{spec.name}:{limit}", math.ceil(limit / self.replicas), spec.window_seconds)

    async def _counted_in(
        self, spec: RuleSpec, limit: int, call: Callable[[Windows, Item], Awaitable[T]], *, admission: bool
    ) -> tuple[T, Windows, Item]:
        """Run `call` on the windows in force: Redis while it answers, else this replica's share (or memory)."""
        if self._redis is not None and self.redis_state.up:
            item = self._item(spec, limit)
            try:
                return await call(self._redis, item), self._redis, item
            except RedisUnavailable as exc:
                self.redis_state.failed(exc, by="rate limiter")
        if self._memory is not None:
            item = self._item(spec, limit)
            return await call(self._memory, item), self._memory, item
        item = await self._share(spec, limit, admission=admission)
        return await call(self._shares, item), self._shares, item

    # --- enforcement -----------------------------------------------------------------------------

    def _item(self, spec: RuleSpec, limit: int) -> Item:
        key = (spec.name, limit)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = Item(spec.name, limit, spec.window_seconds)
        return item

    async def hit(self, name: str, identity: str, *, own: int | None = None) -> None:
        """Count one request against rule `name` for `identity`; raise a 429 when over the limit (a 503 when Redis
        is down and RATE_LIMIT_REDIS_FALLBACK=refuse). `own`: the identity's own limit (a key's rate_per_minute),
        which applies when it is lower than the rule's."""
        limit = self.limit_of(name)
        if own is not None and (limit is None or own < limit):
            limit = own
        if limit is None:
            return
        spec = RULES[name]
        if limit > 0:
            admitted, windows, item = await self._counted_in(
                spec, limit, lambda w, i: w.hit(i, identity), admission=True
            )
            if windows is self._shares:
                child(RATE_LIMIT_FALLBACK, name, "admitted" if admitted else "limited").inc()
            if admitted:
                return
        RATE_LIMIT_HITS.labels(action=name).inc()
        self._announce(spec, limit, identity)
        reset = spec.window_seconds
        share = ""
        if limit > 0:
            stats = await windows.get_window_stats(item, identity)
            reset = max(1, math.ceil(stats.reset_time - time.time()))
            if windows is self._shares:
                share = f" (Redis is unavailable: this replica admits its share, {item.amount})"
        who = {"user": "you", "key": "this API key"}.get(spec.per, "your address")
        raise RateLimited(
            f"Rate limit `{name}` reached: {limit} per {spec.window} for {who}{share}. Retry in {reset} s.",
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
        if limit <= 0:
            return False
        allowed, _, _ = await self._counted_in(RULES[name], limit, lambda w, i: w.test(i, identity), admission=True)
        return allowed

    async def count(self, name: str, identity: str) -> None:
        """Count one event (e.g. a failed login) without refusing anything; a full window stays full."""
        limit = self.limit_of(name)
        if limit is not None and limit > 0:
            await self._counted_in(RULES[name], limit, lambda w, i: w.hit(i, identity), admission=False)

    async def _stats(self, spec: RuleSpec, limit: int, identity: str) -> tuple[WindowStats, Item]:
        stats, _, item = await self._counted_in(
            spec, limit, lambda w, i: w.get_window_stats(i, identity), admission=False
        )
        return stats, item

    async def used(self, name: str, identity: str) -> int:
        """How many events rule `name` holds for `identity` in its current window (0 when unlimited)."""
        limit = self.limit_of(name)
        if limit is None or limit <= 0:
            return 0
        stats, item = await self._stats(RULES[name], limit, identity)
        return max(0, item.amount - stats.remaining)

    async def retry_in(self, name: str, identity: str) -> int:
        """Seconds until rule `name` admits `identity` again (at least 1)."""
        spec = RULES[name]
        limit = self.limit_of(name)
        if limit is None or limit <= 0:
            return spec.window_seconds
        stats, _ = await self._stats(spec, limit, identity)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def sweep(self) -> int:
        """Drop this process's stale rate-limit data: empty windows (memory, local shares) and old live-feed throttle
        entries. Redis windows expire by themselves (each key carries its window as TTL): nothing to sweep there."""
        removed = self._memory.sweep() if self._memory is not None else 0
        removed += self._shares.sweep()
        cutoff = time.monotonic() - HIT_EVENT_SECONDS
        stale = [pair for pair, at in self._announced.items() if at < cutoff]
        for pair in stale:
            del self._announced[pair]
        return removed + len(stale)

    async def clear(self) -> None:
        """Forget every window (tests and `gatehouse` repairs)."""
        await self._shares.reset()
        if self._memory is not None:
            await self._memory.reset()
        if self._redis is not None and self.redis_state.up:
            try:
                await self._redis.reset()
            except RedisUnavailable as exc:
                self.redis_state.failed(exc, by="rate limiter")


def _async_uri(url: str) -> str:
    """The `limits` library names its async Redis backends with an `async+` scheme."""
    return url if url.startswith("async+") else "async+" + url
