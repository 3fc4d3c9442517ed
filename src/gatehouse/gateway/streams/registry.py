"""Live streams: every in-flight gateway request, listed across replicas and terminable from any of them.

Each replica keeps its own registry in memory. With Redis, it also publishes a snapshot every second
(expiring after a few seconds), so any replica can list all streams; a termination travels on the bus to
the replica that holds the stream, which closes the upstream connection: the relay then ends the client's
stream with a `terminated_by_operator` error and settles usage as for any other ending.

While Redis is unreachable (core/redis_state.py) only this replica's streams can be seen: `everywhere` says the
list is incomplete, and a termination of a stream held elsewhere is refused with a 503 rather than a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gatehouse.core.bus import Signal
from gatehouse.core.feed import EventFeed
from gatehouse.core.ids import new_id
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import ACTIVE_STREAMS
from gatehouse.core.redis_state import RedisState, describe
from gatehouse.core.tasks import stop as stop_task

log = get_logger("gatehouse.streams")
STARTED, ENDED, TERMINATED = "stream.started", "stream.ended", "stream.terminated"  # live feed events
SNAPSHOT_SECONDS = 1.0
SNAPSHOT_TTL_SECONDS = 5


@dataclass
class LiveStream:
    """One in-flight request, as operators see it."""

    id: str
    user_id: int
    user_email: str
    key_id: int | None
    model: str
    protocol: str
    stream: bool
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    upstream: str | None = None
    tokens: int = 0
    replica: str = ""
    terminated_reason: str | None = None
    ended_by_shutdown: bool = False  # terminated at the shutdown deadline (`shutdown_deadline`), not by an operator
    _cancel: Callable[[], None] | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        """The fields an operator sees."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "user_email": self.user_email,
            "key_id": self.key_id,
            "model": self.model,
            "protocol": self.protocol,
            "stream": self.stream,
            "upstream": self.upstream,
            "started_at": self.started_at.isoformat(),
            "tokens": self.tokens,
            "replica": self.replica,
        }

    def on_terminate(self, cancel: Callable[[], None]) -> None:
        """What to do when an operator ends this request (close the upstream connection); done at once if it was
        ended before its upstream connection was open."""
        self._cancel = cancel
        if self.terminated_reason is not None:
            cancel()

    def terminate(self, reason: str, *, shutdown: bool = False) -> None:
        """End the request: the relay reports `terminated_by_operator` (or `shutdown_deadline`) to the client."""
        if self.terminated_reason is None:
            self.ended_by_shutdown = shutdown
            self.terminated_reason = reason or "terminated by an operator"
            if self._cancel is not None:
                self._cancel()


class StreamRegistry:
    """This replica's live requests, plus (with Redis) every replica's latest snapshot."""

    def __init__(
        self,
        *,
        replica: str,
        redis_url: str = "",
        prefix: str = "gatehouse:",
        feed: EventFeed | None = None,
        redis_state: RedisState | None = None,
    ) -> None:
        self.replica = replica
        self.feed = feed
        self._live: dict[str, LiveStream] = {}
        self._redis: Any = None
        self._key = f"{prefix}streams:{replica}"
        self._pattern = f"{prefix}streams:*"
        self._task: asyncio.Task[None] | None = None
        self._owns_state = redis_state is None
        self.redis_state = redis_state if redis_state is not None else RedisState(redis_url)
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.Redis.from_url(redis_url, **self.redis_state.client_options())

    def open(self, **fields: Any) -> LiveStream:
        """Register a request; its id is new."""
        live = LiveStream(id=new_id(16), replica=self.replica, **fields)
        self._live[live.id] = live
        if live.stream:
            ACTIVE_STREAMS.inc()
        if self.feed is not None:
            self.feed.publish(
                STARTED,
                {
                    "id": live.id,
                    "user_id": live.user_id,
                    "key_id": live.key_id,
                    "model": live.model,
                    "protocol": live.protocol,
                    "stream": live.stream,
                },
            )
        return live

    def close(
        self,
        live: LiveStream,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        usage: tuple[int, int] | None = None,
    ) -> None:
        """The request ended (with this status, error code and settled (prompt, completion) tokens, when known)."""
        if self._live.pop(live.id, None) is None:
            return
        if live.stream:
            ACTIVE_STREAMS.dec()
        if self.feed is not None:
            self.feed.publish(
                ENDED,
                {
                    "id": live.id,
                    "user_id": live.user_id,
                    "model": live.model,
                    "upstream": live.upstream,
                    "tokens": live.tokens,  # content chunks relayed
                    "prompt_tokens": usage[0] if usage else None,
                    "completion_tokens": usage[1] if usage else None,
                    "status_code": status_code,
                    "error_code": error_code,
                    "terminated": live.terminated_reason,
                    "seconds": round((datetime.now(UTC) - live.started_at).total_seconds(), 3),
                },
            )

    def local(self) -> list[LiveStream]:
        """This replica's live requests."""
        return list(self._live.values())

    def terminate_local(self, reason: str) -> int:
        """At the shutdown deadline: end every request still running here (`shutdown_deadline`); how many."""
        live = self.local()
        for stream in live:
            stream.terminate(reason, shutdown=True)
        return len(live)

    def get_local(self, stream_id: str) -> LiveStream | None:
        """A live request of this replica."""
        return self._live.get(stream_id)

    async def all(self) -> list[dict[str, Any]]:
        """Every replica's live requests (this one's current, the others' as of their last snapshot)."""
        return (await self.everywhere())[0]

    async def everywhere(self) -> tuple[list[dict[str, Any]], bool]:
        """Every replica's live requests, and whether the other replicas' could be read (not while Redis is
        unreachable: then only this replica's are listed)."""
        streams = {s.id: s.public() for s in self._live.values()}
        complete = True
        if self._redis is not None:
            complete = self.redis_state.up and await self._read_others(streams)
        return sorted(streams.values(), key=lambda s: s["started_at"]), complete

    async def _read_others(self, streams: dict[str, dict[str, Any]]) -> bool:
        try:
            async with asyncio.timeout(self.redis_state.timeout * 4):
                async for key in self._redis.scan_iter(match=self._pattern, count=100):
                    if key.decode() == self._key:
                        continue
                    raw = await self._redis.get(key)
                    for item in orjson.loads(raw) if raw else []:
                        streams.setdefault(item["id"], item)
        except Exception as exc:
            self.redis_state.failed(exc, by="stream registry")
            log.warning("stream_snapshot_read_failed", error=describe(exc))
            return False
        return True

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: terminate a stream this replica holds."""
        if kind == Signal.STREAM_TERMINATE and (live := self._live.get(str(data.get("id")))) is not None:
            live.terminate(str(data.get("reason") or ""))

    async def start(self) -> None:
        """Publish snapshots (with Redis)."""
        if self._redis is not None:
            self._task = asyncio.create_task(self._publish_forever(), name="gatehouse-streams")

    async def close_all(self) -> None:
        """Stop publishing and remove this replica's snapshot."""
        await stop_task(self._task)
        if self._redis is not None:
            if self.redis_state.up:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.redis_state.timeout * 2):
                        await self._redis.delete(self._key)
            await self._redis.aclose()
        if self._owns_state:
            await self.redis_state.close()

    async def _publish_forever(self) -> None:
        while True:
            started = time.monotonic()
            # While Redis is down nothing is sent (the shared probe watches it); the first snapshot after goes
            # out as soon as it answers.
            if await self.redis_state.wait_up(SNAPSHOT_SECONDS):
                try:
                    snapshot = orjson.dumps([s.public() for s in self._live.values()])
                    async with asyncio.timeout(self.redis_state.timeout * 2):
                        await self._redis.set(self._key, snapshot, ex=SNAPSHOT_TTL_SECONDS)
                except Exception as exc:
                    self.redis_state.failed(exc, by="stream registry")
                    log.warning("stream_snapshot_failed", error=describe(exc))
            await asyncio.sleep(max(0.0, SNAPSHOT_SECONDS - (time.monotonic() - started)))
