"""The live feed shared by every replica (REDIS_URL): a Redis Stream each replica appends its events to in
batches, and follows with one reader task that fills its ring (core/feed.py) for its local followers.

While Redis is unreachable (core/redis_state.py) events wait in memory, and both tasks wait for the shared probe
to hear Redis again: then what waited goes out at once, each event with the time it happened."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from typing import Any

import orjson

from gatehouse.core.feed import (
    BUFFER,
    ENTRY_END,
    JSON_OPTIONS,
    READ_LIMIT,
    Batch,
    EventFeed,
    EventKey,
    FeedEvent,
    parse_id,
)
from gatehouse.core.logging import get_logger
from gatehouse.core.redis_state import RedisState, describe
from gatehouse.core.tasks import stop as stop_task

log = get_logger("gatehouse.events")
STREAM = "events"  # the Redis Stream's key, under REDIS_PREFIX (a key: no clash with the bus's channel)
STREAM_MAXLEN = 10000  # entries (batches) Redis keeps, approximately: at least this many events to catch up on
ENTRY_EVENTS = 200  # events per stream entry at most
PRELOAD_ENTRIES = 100  # entries a starting replica loads into its ring
MAX_PENDING = 10000  # events held while Redis is away; the oldest go first beyond that
BLOCK_MS = 5000  # one XREAD waits this long for news
REDIS_TIMEOUT = 2.0
MAX_RETRY_SECONDS = 5.0
FUTURE_SLACK_MS = 60_000  # a stream id further ahead of our clock than this was never issued


class RedisEventFeed(EventFeed):
    """The feed shared by every replica through a Redis Stream; the ring mirrors its newest events."""

    def __init__(
        self, url: str, *, prefix: str, replica: str, buffer: int = BUFFER, state: RedisState | None = None
    ) -> None:
        super().__init__(replica=replica, buffer=buffer)
        import redis.asyncio as redis

        self._owns_state = state is None
        self.state = state if state is not None else RedisState(url)

        self._key = prefix + STREAM
        self._floor = self._floor_id = None
        self._last = "0-0"  # the newest entry read so far
        self._pending: collections.deque[tuple[str, float, dict[str, Any]]] = collections.deque(maxlen=MAX_PENDING)
        self._dropped = 0
        self._flush_wake = asyncio.Event()
        self._loaded = asyncio.Event()
        # Sends in the background, except a replay older than the ring (a follower's request): short timeouts.
        self._redis = redis.Redis.from_url(url, **self.state.client_options(read_timeout=REDIS_TIMEOUT))
        # XREAD blocks for BLOCK_MS: its socket waits longer, and a dead connection still shows within seconds.
        self._reader = redis.Redis.from_url(url, **self.state.client_options(read_timeout=BLOCK_MS / 1000 + 5))
        self._tasks: list[asyncio.Task[None]] = []

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue the event for Redis (sent within milliseconds, in batches); never blocks and never raises."""
        try:
            pending = self._pending
            if len(pending) == pending.maxlen:
                self._dropped += 1
            pending.append((kind, time.time(), data))
            self._flush_wake.set()
        except Exception:
            log.exception("event_publish_failed", kind=kind)

    async def start(self) -> None:
        await super().start()
        self._tasks = [
            asyncio.create_task(self._flush_forever(), name="gatehouse-events-flush"),
            asyncio.create_task(self._read_forever(), name="gatehouse-events-read"),
        ]
        # Followers joining right after the start know where "now" is; a Redis that is away delays nothing.
        if self.state.up:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REDIS_TIMEOUT):
                    await self._loaded.wait()

    async def close(self) -> None:
        await super().close()
        for task in self._tasks:
            await stop_task(task)
        if self.state.up:
            with contextlib.suppress(Exception):  # a last chance for what was published during shutdown
                async with asyncio.timeout(REDIS_TIMEOUT):
                    await self._flush()
        if self._owns_state:
            await self.state.close()
        await self._redis.aclose()
        await self._reader.aclose()

    # --- sending -----------------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        # Events published while a batch is on its way go out together in the next one: one round trip
        # and one stream entry per batch, however busy the gateway is.
        delay = 0.5
        while not _cancelled():
            await self._flush_wake.wait()
            if not await self.state.wait_up(MAX_RETRY_SECONDS):
                continue  # still down: the events keep waiting (bounded), nothing is tried meanwhile
            self._flush_wake.clear()
            try:
                await self._flush()
            except Exception as exc:
                self.state.failed(exc, by="live feed")
                log.warning("event_feed_send_failed", error=describe(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                self._flush_wake.set()
            else:
                delay = 0.5

    async def _flush(self) -> None:
        """Send the pending events; on failure they stay pending (the oldest go first when too many wait)."""
        if not self._pending:
            return
        batch = list(self._pending)
        self._pending.clear()
        if self._dropped:
            log.warning("event_feed_dropped", count=self._dropped, reason="more pending than Redis took in time")
            self._dropped = 0
        pipe = self._redis.pipeline(transaction=False)
        for start in range(0, len(batch), ENTRY_EVENTS):
            entry = self._encode(batch[start : start + ENTRY_EVENTS])
            pipe.xadd(self._key, {"e": entry}, maxlen=STREAM_MAXLEN, approximate=True)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT + 0.5):
                await pipe.execute()
        except BaseException:
            self._pending = collections.deque(itertools.chain(batch, self._pending), maxlen=MAX_PENDING)
            raise

    def _encode(self, events: list[tuple[str, float, dict[str, Any]]]) -> bytes:
        """One stream entry: {"replica", "events": [[kind, at, data], ...]}; an unserializable event is left out."""
        items = [list(event) for event in events]
        try:
            return orjson.dumps({"replica": self.replica, "events": items}, default=str, option=JSON_OPTIONS)
        except Exception:
            kept = []
            for item in items:
                try:
                    orjson.dumps(item, default=str, option=JSON_OPTIONS)
                except Exception:
                    log.exception("event_unserializable", kind=item[0])
                else:
                    kept.append(item)
            return orjson.dumps({"replica": self.replica, "events": kept}, default=str, option=JSON_OPTIONS)

    # --- receiving ---------------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        delay = 0.5
        while not _cancelled():
            try:
                if self._floor is None:
                    await self._load_recent()
                reply: Any = await self._reader.xread({self._key: self._last}, count=READ_LIMIT, block=BLOCK_MS)
                for _, entries in reply or ():
                    for entry_id, fields in entries:
                        self._last = _text(entry_id)
                        for event in self._decode(entry_id, fields):
                            self._append(event)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.state.failed(exc, by="live feed")
                log.warning("event_feed_read_failed", error=describe(exc), retry_in=delay)
                await asyncio.sleep(min(delay, 0.25))
                await self.state.wait_up(delay)  # back at once when the shared probe hears Redis again
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _load_recent(self) -> None:
        """Fill the ring with the stream's newest events; from then on, XREAD follows the stream."""
        entries: Any = await self._reader.xrevrange(self._key, count=PRELOAD_ENTRIES)
        self._ring.clear()
        for entry_id, fields in reversed(entries):
            self._ring.extend(self._decode(entry_id, fields))
        if entries:
            self._last = _text(entries[0][0])
        if self._ring:
            self._floor, self._floor_id = self._ring[0].key, self._ring[0].id
        else:
            self._floor, self._floor_id = parse_id(self._last) or (0, 0, ENTRY_END), self._last
        self._loaded.set()
        self._notify(always=True)

    def _decode(self, entry_id: bytes | str, fields: dict[bytes, bytes]) -> list[FeedEvent]:
        ident = _text(entry_id)
        ms, seq, _ = parse_id(ident) or (0, 0, 0)
        try:
            payload = orjson.loads(fields[b"e"])
            replica = str(payload["replica"])
            return [
                FeedEvent(f"{ident}.{index}", (ms, seq, index), str(kind), float(at), replica, dict(data))
                for index, (kind, at, data) in enumerate(payload["events"])
            ]
        except Exception:  # not ours (someone wrote to the key by hand): skipped
            log.warning("event_undecodable", id=ident)
            return []

    async def _older(self, key: EventKey, cursor: str, limit: int) -> Batch:
        """Older than the ring: read the stream itself, and whether it still holds everything after `cursor`."""
        entry = f"{key[0]}-{key[1]}"
        if not self.state.up:
            return await super()._older(key, cursor, limit)
        try:  # a follower's request waits: no longer than the state's short timeouts
            async with asyncio.timeout(self.state.timeout * 3):
                pipe = self._redis.pipeline(transaction=False)
                pipe.xinfo_stream(self._key)
                pipe.xrange(self._key, min=entry, max="+", count=limit)
                info, entries = await pipe.execute()
        except Exception as exc:
            self.state.failed(exc, by="live feed")
            log.warning("event_history_failed", error=describe(exc))
            return await super()._older(key, cursor, limit)
        events: list[FeedEvent] = []
        for entry_id, fields in entries:
            events += (e for e in self._decode(entry_id, fields) if e.key > key)
            if len(events) >= limit:
                break
        if not events:  # nothing readable there (the stream was reset): carry on from the ring
            return await super()._older(key, cursor, limit)
        kept = bool(entries) and _text(entries[0][0]) == entry
        return Batch(events[:limit], events[:limit][-1].id, gap=_lost_after(key, info, kept=kept))

    def _ahead(self, key: EventKey, cursor: str, limit: int) -> Batch:
        # Another replica may simply have read the stream a moment before this one: wait for it here. Only an
        # id from a clock far ahead of ours was never issued.
        if key[0] > time.time() * 1000 + FUTURE_SLACK_MS:
            return Batch([], self.latest_id, gap=True)
        return Batch([], cursor)


def _lost_after(key: EventKey, info: dict[str, Any], *, kept: bool) -> bool:
    """Whether the stream dropped events after `key`; `kept`: the entry holding `key` is still there."""
    added, length = info.get("entries-added"), info.get("length")
    if added is not None and added == length:  # Redis 7 counts every entry ever added: none was removed
        return False
    deleted = info.get("max-deleted-entry-id")  # Redis 7, moved by XDEL (not by trimming)
    if deleted is not None and (parse_id(_text(deleted)) or (0, 0, 0)) > key:
        return True
    if kept:  # trimming removes the oldest first: with this entry still there, everything after it is too
        return False
    first = info.get("first-entry")  # the oldest kept is later than the client's: what lay between is gone
    if first is None:
        return False
    ms, seq, _ = parse_id(_text(first[0])) or (0, 0, 0)
    return (ms, seq, 0) > key


def _cancelled() -> bool:
    """Whether this task was asked to stop: redis-py (8.1, Python 3.11) can swallow a CancelledError that
    arrives while a pipeline finishes, and a loop that went on would hold up the shutdown forever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def create_feed(redis_url: str, prefix: str, replica: str, state: RedisState | None = None) -> EventFeed:
    """The feed for this deployment: shared through Redis when REDIS_URL is set (with the process's Redis state)."""
    if not redis_url:
        return EventFeed(replica=replica)
    return RedisEventFeed(redis_url, prefix=prefix, replica=replica, state=state)
