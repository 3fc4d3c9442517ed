"""Whether Redis answers, as this process sees it: one object shared by every Redis client (the rate limiter, the
bus, the live feed, the stream registry).

The first client whose call fails marks Redis down; from then on requests skip Redis at once (the rate limiter
falls back, the bus holds its signals back) instead of each paying a timeout of its own, and a background probe
PINGs Redis every PROBE_SECONDS until it answers, then marks it up again. Subscribers hear of each switch, and
the live feed gets `redis.unavailable` and `redis.restored` (through Redis itself when the feed is shared: those
wait in memory until Redis is back, with the time they happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import REDIS_UP
from gatehouse.core.tasks import stop as stop_task

log = get_logger("gatehouse.redis")
REQUEST_TIMEOUT = 0.5  # seconds to connect, and to wait for an answer, on a request's path
PROBE_SECONDS = 1.0  # while Redis is down, a PING this often
UNAVAILABLE, RESTORED = "redis.unavailable", "redis.restored"  # live feed events
MAX_ERROR_CHARS = 200

Listener = Callable[[bool], None]  # called with True when Redis answers again, False when it went away


class RedisUnavailable(Exception):
    """A Redis call failed (no connection, no answer in time, or an error reply): the caller falls back."""


def outage_errors() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when Redis is away or unwell (imported late: one process on SQLite never loads
    redis-py)."""
    from redis.exceptions import RedisError

    return RedisError, OSError, TimeoutError


def describe(exc: BaseException) -> str:
    """An error as one short line: its class and message."""
    cause = exc.__cause__ if isinstance(exc, RedisUnavailable) and exc.__cause__ is not None else exc
    return f"{type(cause).__name__}: {str(cause)[:MAX_ERROR_CHARS]}" if str(cause) else type(cause).__name__


class RedisState:
    """Up or down, with a probe that brings it back up; `configured` is False without REDIS_URL (then always up)."""

    def __init__(self, url: str = "", *, timeout: float = REQUEST_TIMEOUT, probe_seconds: float = PROBE_SECONDS):
        self.url = url
        self.timeout = timeout
        self.probe_seconds = probe_seconds
        self.down_since: float | None = None  # epoch seconds
        self.error: str | None = None  # what made it go down, then the probe's latest failure
        self.feed: EventFeed | None = None
        self._up = True
        self._answered = asyncio.Event()
        self._answered.set()
        self._listeners: list[Listener] = []
        self._probe: asyncio.Task[None] | None = None
        self._closed = False
        if url:
            REDIS_UP.set(1)

    @property
    def configured(self) -> bool:
        """Whether this process uses Redis at all (REDIS_URL)."""
        return bool(self.url)

    @property
    def up(self) -> bool:
        """Whether requests may call Redis now (always, without REDIS_URL)."""
        return self._up

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(up)` at each switch (from the event loop; it must not block)."""
        self._listeners.append(listener)

    def announce_on(self, feed: EventFeed) -> None:
        """Publish `redis.unavailable` and `redis.restored` on this live feed."""
        self.feed = feed

    def client_options(self, *, read_timeout: float | None = None, retries: int = 1) -> dict[str, Any]:
        """Keyword arguments for a redis-py client: short timeouts, and one immediate retry on a broken connection
        (a pooled connection that Redis closed while it restarted) but none on a timeout, which would wait again."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        return {
            "socket_connect_timeout": self.timeout,
            "socket_timeout": read_timeout or self.timeout,
            "retry": Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
        }

    def failed(self, exc: BaseException, *, by: str) -> None:
        """A Redis call failed: mark Redis down (once per outage) and probe it until it answers."""
        if not self.configured or self._closed:
            return
        if not self._up:
            return
        self._up = False
        self.down_since = time.time()
        self.error = describe(exc)
        self._answered.clear()
        REDIS_UP.set(0)
        log.warning("redis_unavailable", error=self.error, noticed_by=by, probe_seconds=self.probe_seconds)
        if self.feed is not None:
            self.feed.publish(UNAVAILABLE, {"error": self.error, "noticed_by": by})
        self._tell(False)
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_up(), name="gatehouse-redis-probe")

    async def wait_up(self, seconds: float) -> bool:
        """Until Redis is up (at once when it is), at most `seconds`; whether it is up."""
        if self._up:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._answered.wait()
        return self._up

    async def start(self) -> None:
        """Find out once whether Redis answers, so health and metrics are right from the start."""
        if not self.configured:
            return
        try:
            await self.ping()
        except Exception as exc:
            self.failed(exc, by="start")

    async def close(self) -> None:
        """Stop probing."""
        self._closed = True
        await stop_task(self._probe)
        self._probe = None

    async def ping(self) -> float:
        """One PING on a fresh connection (a pooled one may be a dead one from before a restart); its seconds."""
        import redis.asyncio as redis

        client = redis.Redis.from_url(self.url, **self.client_options(retries=0))
        try:
            started = time.perf_counter()
            async with asyncio.timeout(self.timeout * 2 + 0.5):
                await client.ping()
            return time.perf_counter() - started
        finally:
            await client.aclose()

    async def _probe_until_up(self) -> None:
        while True:
            await asyncio.sleep(self.probe_seconds)
            try:
                await self.ping()
            except Exception as exc:
                self.error = describe(exc)
                continue
            self._restored()
            return

    def _restored(self) -> None:
        down_seconds = round(time.time() - (self.down_since or time.time()), 3)
        self._up = True
        self.down_since = None
        self.error = None
        self._answered.set()
        REDIS_UP.set(1)
        log.info("redis_restored", down_seconds=down_seconds)
        if self.feed is not None:
            self.feed.publish(RESTORED, {"down_seconds": down_seconds})
        self._tell(True)

    def _tell(self, up: bool) -> None:
        for listener in self._listeners:
            try:
                listener(up)
            except Exception:
                log.exception("redis_listener_failed", up=up)
