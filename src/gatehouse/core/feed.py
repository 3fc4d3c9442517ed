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

from gatehouse.core.logging import get_logger

log = get_logger("gatehouse.events")
BUFFER = 1000  # events each replica keeps in memory
READ_LIMIT = 500
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


def _key(event: FeedEvent) -> EventKey:
    return event.key


@dataclass(slots=True, eq=False)
class FeedEvent:
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

    events: list[FeedEvent]
    cursor: str | None  # None: not known yet (Redis has not answered since the start)
    gap: bool = False


class EventFeed:
    """Operational events in a ring buffer, numbered for Last-Event-ID; one replica, in memory."""

    def __init__(self, *, replica: str, buffer: int = BUFFER) -> None:
        self.replica = replica
        self._ring: collections.deque[FeedEvent] = collections.deque(maxlen=buffer)
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
            self._append(FeedEvent(str(number), (number, 0, 0), kind, time.time(), self.replica, data))
        except Exception:  # the caller is serving a request: losing an event beats failing it
            log.exception("event_publish_failed", kind=kind)

    def _append(self, event: FeedEvent) -> None:
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

    def _first(self, limit: int) -> list[FeedEvent]:
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
