"""The event bus for cross-replica signals: in-process when alone, Redis pub/sub when REDIS_URL is set.

Caches subscribe here, so a revoked key or a disabled user takes effect on the next request everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gatehouse.ops.logging import get_logger

log = get_logger("gatehouse.bus")
Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]
CHANNEL = "events"  # under REDIS_PREFIX
RECONNECTED = "bus.reconnected"  # delivered locally after a Redis outage: caches must drop everything


class EventBus:
    """Publishes events to every replica (this one included) and calls the subscribed handlers."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def subscribe(self, handler: Handler) -> None:
        """Call `handler(kind, data)` for every event, local or remote."""
        self._handlers.append(handler)

    async def publish(self, kind: str, data: dict[str, Any]) -> None:
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

    def __init__(self, url: str, *, prefix: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self._channel = prefix + CHANNEL
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def publish(self, kind: str, data: dict[str, Any]) -> None:
        await self._deliver(kind, data)
        payload = orjson.dumps({"kind": kind, "data": data, "origin": self.origin})
        try:
            await self._redis.publish(self._channel, payload)
        except Exception as exc:
            # Other replicas miss this event; their caches expire (AUTH_CACHE_SECONDS) or flush on reconnect.
            log.error("bus_publish_failed", kind=kind, error=str(exc))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="gatehouse-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def _listen(self) -> None:
        first = True
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    if not first:
                        await self._deliver(RECONNECTED, {})
                    first = False
                    self._ready.set()
                    async for message in pubsub.listen():
                        await self._on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus_disconnected", error=str(exc))
                await asyncio.sleep(1)

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
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()


def create_bus(redis_url: str, prefix: str) -> EventBus:
    """The right bus for this deployment."""
    return RedisEventBus(redis_url, prefix=prefix) if redis_url else EventBus()
