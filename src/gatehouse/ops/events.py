"""The live event feed behind GET /admin/events: upstream states and overrides, streams, blocks, limits.

One replica: a ring buffer in memory, ids counting up from 1. Several (REDIS_URL): a Redis Stream every
replica appends to, and reads from with one task that fans out to its local followers; an event reaches
every replica, and a follower reconnecting anywhere with Last-Event-ID gets what it missed. Each stream
entry holds a batch of events, so a busy gateway costs Redis one entry per batch, not per event; an event's
id is its entry's id and its place in it (`1732270000000-0.3`).

`publish` sits on the gateway's hot path: it never blocks, never raises and never waits for Redis; a
background task sends what was published in batches. While Redis is away, events wait (bounded) and go
out once it answers again; the gateway does not notice.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import orjson

from gatehouse.ops.logging import get_logger
from gatehouse.ops.tasks import stop as stop_task

log = get_logger("gatehouse.events")
BUFFER = 1000  # events each replica keeps in memory
STREAM = "events"  # the Redis Stream's key, under REDIS_PREFIX (a key: no clash with the bus's channel)
STREAM_MAXLEN = 10000  # entries (batches) Redis keeps, approximately: at least this many events to catch up on
ENTRY_EVENTS = 200  # events per stream entry at most
PRELOAD_ENTRIES = 100  # entries a starting replica loads into its ring
MAX_PENDING = 10000  # events held while Redis is away; the oldest go first beyond that
READ_LIMIT = 500
BLOCK_MS = 5000  # one XREAD waits this long for news
REDIS_TIMEOUT = 2.0
MAX_RETRY_SECONDS = 5.0
FUTURE_SLACK_MS = 60_000  # a stream id further ahead of our clock than this was never issued
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
EventKey = tuple[int, int, int]
ENTRY_END = 1 << 62  # the index of a bare stream entry id: after every event in that entry


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_id(text: str) -> EventKey | None:
    """An event id as a sortable key; None when malformed.

    `42` (one replica); `1732270000000-0.3` (event 3 of a Redis Stream entry); a bare entry id
    `1732270000000-0` stands after every event of that entry.
    """
    if len(text) > 48:
        return None
    entry, dot, index = text.partition(".")
    ms, dash, seq = entry.partition("-")
    if not _digits(ms) or (dash and not _digits(seq)) or (dot and not (dash and _digits(index))):
        return None
    if not dash:
        return int(ms), 0, 0
    return int(ms), int(seq), int(index) if dot else ENTRY_END


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def _key(event: Event) -> EventKey:
    return event.key


@dataclass(slots=True, eq=False)
class Event:
    """One published event; what a follower receives is `public()`."""

    id: str
    key: EventKey
    kind: str
    at: float  # epoch seconds; ISO UTC in `public()`
    replica: str
    data: dict[str, Any]
    _sse: bytes | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        """The event as JSON: id, kind, at (ISO UTC), replica and its data."""
        return {"id": self.id, "kind": self.kind, "at": _iso(self.at), "replica": self.replica, "data": self.data}

    def sse(self) -> bytes:
        """The event as a server-sent event; built once, whatever the number of followers."""
        if self._sse is None:
            try:
                body = orjson.dumps(self.public(), default=str, option=JSON_OPTIONS)
            except Exception:  # a value orjson refuses (a huge int, a cycle): the event still shows
                body = orjson.dumps({**self.public(), "data": {"unserializable": True}})
            kind = self.kind.replace("\n", " ").replace("\r", " ")
            self._sse = b"id: %s\nevent: %s\ndata: %s\n\n" % (self.id.encode(), kind.encode(), body)
        return self._sse


@dataclass(slots=True)
class Batch:
    """What follows a cursor: the events, where to read next, and whether some were lost in between."""

    events: list[Event]
    cursor: str | None  # None: not known yet (Redis has not answered since the start)
    gap: bool = False


class EventFeed:
    """Operational events in a ring buffer, numbered for Last-Event-ID; one replica, in memory."""

    def __init__(self, *, replica: str, buffer: int = BUFFER) -> None:
        self.replica = replica
        self._ring: collections.deque[Event] = collections.deque(maxlen=buffer)
        # Every event with a later id than the floor is in the ring (None: not known yet).
        self._floor: EventKey | None = (0, 0, 0)
        self._floor_id: str | None = "0"
        self._next = 1
        self._wake = asyncio.Event()
        self._waiting = 0
        self.stopping = False
        self._signals: list[tuple[int, Callable[[int, FrameType | None], Any], Any]] = []

    # --- writing -----------------------------------------------------------------------------------

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Record an event for every follower; never blocks and never raises."""
        try:
            number = self._next
            self._next = number + 1
            self._append(Event(str(number), (number, 0, 0), kind, time.time(), self.replica, data))
        except Exception:  # the caller is serving a request: losing an event beats failing it
            log.exception("event_publish_failed", kind=kind)

    def _append(self, event: Event) -> None:
        ring = self._ring
        if len(ring) == ring.maxlen:
            dropped = ring[0]
            self._floor, self._floor_id = dropped.key, dropped.id
        ring.append(event)
        self._notify()

    def _notify(self, *, always: bool = False) -> None:
        """Wake every follower waiting for news (one shared asyncio.Event: O(1) for the publisher)."""
        if self._waiting or always:
            wake, self._wake = self._wake, asyncio.Event()
            self._waiting = 0  # all woken: until they wait again, a publish has nobody to wake
            wake.set()

    # --- reading -----------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """How many followers are waiting for news right now."""
        return self._waiting

    @property
    def latest_id(self) -> str | None:
        """The id of the newest event (where a follower joining now starts); None when not known yet."""
        return self._ring[-1].id if self._ring else self._floor_id

    async def read(self, cursor: str | None, *, limit: int = READ_LIMIT) -> Batch:
        """The events after `cursor` (an id from this feed; None: from now on), at most `limit` of them."""
        if cursor is None or self._floor is None:
            return Batch([], self.latest_id if cursor is None else cursor)
        key = parse_id(cursor)
        if key is None:  # not an id of ours: the client cannot know what it missed
            return Batch([], self.latest_id, gap=True)
        if key < self._floor:
            return await self._older(key, cursor, limit)
        ring = self._ring
        if key > (ring[-1].key if ring else self._floor):
            return self._ahead(key, cursor, limit)
        start = bisect.bisect_right(ring, key, key=_key)
        events = list(itertools.islice(ring, start, start + limit))
        return Batch(events, events[-1].id if events else cursor)

    def _first(self, limit: int) -> list[Event]:
        return list(itertools.islice(self._ring, 0, limit))

    async def _older(self, key: EventKey, cursor: str, limit: int) -> Batch:
        """The cursor is older than the ring: what came after it is partly lost."""
        events = self._first(limit)
        return Batch(events, events[-1].id if events else self.latest_id, gap=True)

    def _ahead(self, key: EventKey, cursor: str, limit: int) -> Batch:
        """An id this feed never issued: from before a restart. Everything retained is new to the client."""
        events = self._first(limit)
        return Batch(events, events[-1].id if events else self.latest_id, gap=True)

    def _has_after(self, cursor: str | None) -> bool:
        if not self._ring or cursor is None:
            return False
        key = parse_id(cursor)
        return key is None or self._ring[-1].key > key

    async def wait(self, cursor: str | None, seconds: float) -> None:
        """Until an event follows `cursor`, the feed stops, or `seconds` pass."""
        if self.stopping or self._has_after(cursor):
            return
        wake = self._wake
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await wake.wait()
        finally:
            if wake is self._wake:  # not woken (timed out, cancelled): no longer waiting
                self._waiting -= 1

    # --- lifecycle ---------------------------------------------------------------------------------

    def stop_following(self) -> None:
        """End every follower now (and any that joins later): the process is stopping."""
        self.stopping = True
        self._notify(always=True)

    async def start(self) -> None:
        """Begin background work; followers end as soon as the process is asked to stop."""
        self._chain_exit_signals()

    async def close(self) -> None:
        """End the followers and stop background work."""
        self.stop_following()
        self._restore_signals()

    def _chain_exit_signals(self) -> None:
        # uvicorn waits (up to its graceful timeout) for every open response before the lifespan ends, and an
        # event stream never ends by itself: hearing SIGTERM/SIGINT first, the followers end at once and their
        # clients reconnect elsewhere. Only a Python handler (uvicorn's) is chained; a default is left alone.
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue

            def handler(number: int, frame: FrameType | None, previous: Any = previous) -> Any:
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    loop.call_soon_threadsafe(self.stop_following)
                return previous(number, frame)

            signal.signal(signum, handler)
            self._signals.append((signum, handler, previous))

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler, previous in reversed(self._signals):
            if signal.getsignal(signum) is handler:  # someone chained after us: leave theirs in place
                signal.signal(signum, previous)
        self._signals.clear()


class RedisEventFeed(EventFeed):
    """The feed shared by every replica through a Redis Stream; the ring mirrors its newest events."""

    def __init__(self, url: str, *, prefix: str, replica: str, buffer: int = BUFFER) -> None:
        super().__init__(replica=replica, buffer=buffer)
        import redis.asyncio as redis

        self._key = prefix + STREAM
        self._floor = self._floor_id = None
        self._last = "0-0"  # the newest entry read so far
        self._pending: collections.deque[tuple[str, float, dict[str, Any]]] = collections.deque(maxlen=MAX_PENDING)
        self._dropped = 0
        self._flush_wake = asyncio.Event()
        self._loaded = asyncio.Event()
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
        # XREAD blocks for BLOCK_MS: its socket waits longer, and a dead connection still shows within seconds.
        self._reader = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=BLOCK_MS / 1000 + 5
        )
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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._loaded.wait()

    async def close(self) -> None:
        await super().close()
        for task in self._tasks:
            await stop_task(task)
        with contextlib.suppress(Exception):  # a last chance for what was published during shutdown
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._flush()
        await self._redis.aclose()
        await self._reader.aclose()

    # --- sending -----------------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        # Events published while a batch is on its way go out together in the next one: one round trip
        # and one stream entry per batch, however busy the gateway is.
        delay = 0.5
        while not _cancelled():
            await self._flush_wake.wait()
            self._flush_wake.clear()
            try:
                await self._flush()
            except Exception as exc:
                log.warning("event_feed_send_failed", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
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
                log.warning("event_feed_read_failed", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await asyncio.sleep(delay)
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

    def _decode(self, entry_id: bytes | str, fields: dict[bytes, bytes]) -> list[Event]:
        ident = _text(entry_id)
        ms, seq, _ = parse_id(ident) or (0, 0, 0)
        try:
            payload = orjson.loads(fields[b"e"])
            replica = str(payload["replica"])
            return [
                Event(f"{ident}.{index}", (ms, seq, index), str(kind), float(at), replica, dict(data))
                for index, (kind, at, data) in enumerate(payload["events"])
            ]
        except Exception:  # not ours (someone wrote to the key by hand): skipped
            log.warning("event_undecodable", id=ident)
            return []

    async def _older(self, key: EventKey, cursor: str, limit: int) -> Batch:
        """Older than the ring: read the stream itself, and whether it still holds everything after `cursor`."""
        entry = f"{key[0]}-{key[1]}"
        try:
            async with asyncio.timeout(REDIS_TIMEOUT + 0.5):
                pipe = self._redis.pipeline(transaction=False)
                pipe.xinfo_stream(self._key)
                pipe.xrange(self._key, min=entry, max="+", count=limit)
                info, entries = await pipe.execute()
        except Exception as exc:
            log.warning("event_history_failed", error=f"{type(exc).__name__}: {exc}")
            return await super()._older(key, cursor, limit)
        events: list[Event] = []
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


def create_feed(redis_url: str, prefix: str, replica: str) -> EventFeed:
    """The feed for this deployment: shared through Redis when REDIS_URL is set."""
    return RedisEventFeed(redis_url, prefix=prefix, replica=replica) if redis_url else EventFeed(replica=replica)
