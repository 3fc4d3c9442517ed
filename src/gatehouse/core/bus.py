"""The event bus for cross-replica signals: in-process when alone, Redis pub/sub when REDIS_URL is set.

Caches subscribe here, so a revoked key or a disabled user takes effect on the next request everywhere.

While Redis is unreachable (core/redis_state.py), a signal is delivered here at once and held back for the
others (no request waits for Redis); the held signals go out as soon as Redis answers again. The listener
resubscribes then too, and announces Signal.RECONNECTED locally: whatever it missed, caches start over.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import orjson

from gatehouse.core.logging import get_logger
from gatehouse.core.redis_state import RedisState, describe
from gatehouse.core.tasks import stop as stop_task

log = get_logger("gatehouse.bus")
Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]
CHANNEL = "events"  # under REDIS_PREFIX


class Signal(StrEnum):
    """What one replica tells every replica, the bus's event kinds (their values are the wire format, shared by
    replicas of different releases during a rolling upgrade)."""

    KEY_CHANGED = "key.changed"  # {"key_id"}: forget the cached key (revoked, renamed...)
    USER_CHANGED = "user.changed"  # {"user_id"}: forget the user's cached keys (status, role, block, deletion)
    LIMITS_CHANGED = "limits.changed"  # {"names"}: reload the rate-limit overrides
    UPSTREAMS_CHANGED = "upstreams.changed"  # {"id"}: reload the upstreams from the database
    ACCESS_CHANGED = "access.changed"  # {}: reload the model access rules (a rule or a group changed)
    PRICES_CHANGED = "prices.changed"  # {}: reload the price table
    BUDGETS_CHANGED = "budgets.changed"  # {}: reload which budgets (user, group, key; day, month) have a limit
    BLOCKLIST_CHANGED = "blocklist.changed"  # {}: reload the IP/CIDR blocklist
    STREAM_TERMINATE = "stream.terminate"  # {"id", "reason"}: end this stream, on the replica that holds it
    LOG_LEVEL = "log.level"  # {"override": {...} or null}: apply this log-level override (monitoring/loglevel.py)
    CONFIG_RELOAD = "config.reload"  # {"id", "origin", "actor"}: re-read the settings and GATEHOUSE_CONFIG, apply
    RECONNECTED = "bus.reconnected"  # delivered locally after a Redis outage: caches must drop everything


HEARTBEAT_SECONDS = 10.0  # a quiet subscription is pinged this often, and dropped when a PING goes unanswered as long
POLL_SECONDS = 1.0
MAX_RETRY_SECONDS = 5.0
MAX_HELD = 10_000  # signals held back while Redis is unreachable; the oldest go first beyond that


class EventBus:
    """Publishes events to every replica (this one included) and calls the subscribed handlers."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def subscribe(self, handler: Handler) -> None:
        """Call `handler(kind, data)` for every event, local or remote."""
        self._handlers.append(handler)

    async def publish(self, kind: Signal, data: dict[str, Any]) -> None:
        """Deliver locally at once (before returning), then to the other replicas."""
        await self._deliver(kind, data)

    async def _deliver(self, kind: str, data: dict[str, Any]) -> None:
        for handler in self._handlers:
            try:
                result = handler(kind, data)
                if result is not None:
                    await result
            except Exception:
                log.exception("bus_handler_failed", kind=kind)

    async def start(self) -> None:
        """Begin listening to other replicas (nothing to do in-process)."""

    async def close(self) -> None:
        """Stop listening."""


class RedisEventBus(EventBus):
    """Redis pub/sub: every replica hears every event; its own echo is skipped (already delivered)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        state: RedisState | None = None,
    ) -> None:
        super().__init__()
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._owns_state = state is None
        self.state = state if state is not None else RedisState(url)
        # Publishing runs inside an admin's request (a revoke, a disable): it must fail fast, not hang.
        self._redis = redis.Redis.from_url(url, **self.state.client_options())
        # The listener's errors must reach _listen, which resubscribes and announces RECONNECTED: redis-py's
        # own retries would reconnect silently, and the events missed meanwhile would go unnoticed.
        self._listener = redis.Redis.from_url(
            url,
            socket_connect_timeout=self.state.timeout,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
            client_name=f"gatehouse-bus-{self.origin}",
        )
        self._channel = prefix + CHANNEL
        self._heartbeat = heartbeat_seconds
        self._poll = min(POLL_SECONDS, heartbeat_seconds / 2)
        self._task: asyncio.Task[None] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._held: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=MAX_HELD)
        self._closed = False
        self.state.subscribe(self._on_redis)

    async def publish(self, kind: Signal, data: dict[str, Any]) -> None:
        await self._deliver(kind, data)
        if not self.state.up or self._held:  # after what is held, in order
            self._hold(kind, data)
            log.warning("bus_publish_held", kind=kind, held=len(self._held), reason="Redis is unavailable")
            if self.state.up:  # nothing is sending what is held (a failure while closing): send it now
                self._on_redis(True)
            return
        try:
            await self._send(kind, data)
        except Exception as exc:
            # Held, and sent once Redis answers; other replicas' caches meanwhile expire within seconds
            # (auth/cache.py) and start over when their subscription comes back.
            self.state.failed(exc, by="bus")
            self._hold(kind, data)
            log.error("bus_publish_failed", kind=kind, error=describe(exc), held=len(self._held))

    async def _send(self, kind: str, data: dict[str, Any]) -> None:
        payload = orjson.dumps({"kind": kind, "data": data, "origin": self.origin})
        async with asyncio.timeout(self.state.timeout * 2 + 0.5):
            await self._redis.publish(self._channel, payload)

    def _hold(self, kind: str, data: dict[str, Any]) -> None:
        if len(self._held) == self._held.maxlen:
            log.warning("bus_held_dropped", kind=self._held[0][0], reason=f"more than {MAX_HELD} held")
        self._held.append((kind, data))

    def _on_redis(self, up: bool) -> None:
        if up and self._held and not self._closed and (self._sending is None or self._sending.done()):
            self._sending = asyncio.get_running_loop().create_task(self._send_held(), name="gatehouse-bus-held")

    async def _send_held(self) -> None:
        """Send what was held back while Redis was unreachable, oldest first."""
        sent = 0
        while self._held and self.state.up:
            kind, data = self._held[0]
            try:
                await self._send(kind, data)
            except Exception as exc:
                self.state.failed(exc, by="bus")
                log.error("bus_publish_failed", kind=kind, error=describe(exc), held=len(self._held))
                return
            self._held.popleft()
            sent += 1
        if sent:
            log.info("bus_held_sent", count=sent)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="gatehouse-bus")
        if self.state.up:  # a replica starting while Redis is away serves at once (it subscribes when Redis is back)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def _listen(self) -> None:
        # True after any time without a subscription, the very first start included: events may have been
        # missed, so once subscribed, caches are told to start over.
        missed = False
        delay = 1.0
        while True:
            try:
                async with self._listener.pubsub() as pubsub:
                    await self._subscribe(pubsub)
                    if missed:
                        log.info("bus_reconnected")
                        await self._deliver(Signal.RECONNECTED, {})
                    missed = False
                    delay = 1.0
                    self._ready.set()
                    await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                missed = True
                self.state.failed(exc, by="bus listener")
                log.warning("bus_disconnected", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                # Back at once when the shared probe hears Redis again, so caches catch up within a second.
                await asyncio.sleep(min(delay, POLL_SECONDS / 4))
                await self.state.wait_up(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _subscribe(self, pubsub: Any) -> None:
        """Subscribe and wait for Redis to confirm, so nothing published from here on is missed."""
        await pubsub.subscribe(self._channel)
        async with asyncio.timeout(self._heartbeat):
            while True:
                message = await pubsub.get_message(timeout=self._poll)
                if message is not None and message.get("type") == "subscribe":
                    return
                if message is not None:
                    await self._on_message(message)

    async def _receive(self, pubsub: Any) -> None:
        """Handle messages until the connection fails; raises when it does, or when Redis stops answering."""
        # A half-open connection (Redis gone without a FIN or RST) reads as silence forever, and redis-py's
        # pub/sub health check only sends its PING without timing the reply: so ping when quiet, and give up
        # when the PONG does not come.
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while True:
            connection = pubsub.connection
            if connection is None or not connection.is_connected:
                raise ConnectionError("the subscription's connection was closed")
            if not self.state.up:
                # Another client found Redis unreachable: this connection may be as dead yet still quiet. Start
                # over, so that once the probe hears Redis the subscription is new and caches catch up at once.
                raise ConnectionError("Redis was found unreachable")
            message = await pubsub.get_message(timeout=self._poll)
            now = loop.time()
            if message is not None:
                heard = now
                await self._on_message(message)
            elif pinged > heard:
                if now - pinged > self._heartbeat:
                    raise ConnectionError(f"Redis did not answer a PING within {self._heartbeat:g} s")
            elif now - heard >= self._heartbeat:
                await pubsub.ping()
                pinged = now

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            event = orjson.loads(message["data"])
        except orjson.JSONDecodeError:
            return
        if event.get("origin") == self.origin:
            return
        await self._deliver(str(event.get("kind")), dict(event.get("data") or {}))

    async def close(self) -> None:
        self._closed = True
        await stop_task(self._task)
        await stop_task(self._sending)
        if self._held:
            log.warning("bus_held_lost", count=len(self._held), reason="stopping while Redis was unavailable")
        if self._owns_state:
            await self.state.close()
        await self._redis.aclose()
        await self._listener.aclose()


def create_bus(redis_url: str, prefix: str, state: RedisState | None = None) -> EventBus:
    """The right bus for this deployment (sharing `state` with the process's other Redis clients)."""
    return RedisEventBus(redis_url, prefix=prefix, state=state) if redis_url else EventBus()
