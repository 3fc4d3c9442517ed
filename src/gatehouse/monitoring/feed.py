"""The live feed as server-sent events (GET /admin/events, what a console's live indicator follows): replay after
a Last-Event-ID, then live events and keep-alives, filtered by kind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson

from gatehouse.core.feed import Batch, EventFeed

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 3000  # how long an EventSource waits before reconnecting
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def kind_filter(kinds: str | None) -> tuple[frozenset[str], tuple[str, ...]] | None:
    """`a.b,c.` as (exact kinds, prefixes); None when everything is wanted."""
    terms = {t.strip() for t in (kinds or "").split(",") if t.strip()}
    if not terms:
        return None
    return frozenset(t for t in terms if not t.endswith(".")), tuple(t for t in terms if t.endswith("."))


def wanted(kind: str, only: tuple[frozenset[str], tuple[str, ...]] | None) -> bool:
    """Whether a follower asking for `only` gets events of `kind`."""
    return only is None or kind in only[0] or kind.startswith(only[1])


def gap_event(cursor: str | None, batch: Batch) -> bytes:
    """Tells the client that events after its Last-Event-ID are gone: it should reload what it shows."""
    body = {
        "after": cursor,
        "resumes_at": batch.events[0].id if batch.events else batch.cursor,
        "message": "Some events after your Last-Event-ID are no longer kept: reload the current state.",
    }
    return b"event: gap\ndata: %s\n\n" % orjson.dumps(body)


async def follow(
    feed: EventFeed, cursor: str | None, only: tuple[frozenset[str], tuple[str, ...]] | None, *, forever: bool
) -> AsyncIterator[bytes]:
    """The feed after `cursor` as SSE bytes: replay, then live events and keep-alives until the client leaves.

    A client that disconnects cancels this generator where it waits (Starlette listens for the disconnect);
    nothing else is left running. When the process stops, the feed ends every follower.
    """
    if cursor is None:  # fixed before the first byte: a client that got it misses nothing published later
        cursor = feed.latest_id
    yield b"retry: %d\n\n" % RETRY_MS
    sent = time.monotonic()
    while not feed.stopping:
        batch = await feed.read(cursor)
        chunk = gap_event(cursor, batch) if batch.gap else b""
        chunk += b"".join(e.sse() for e in batch.events if wanted(e.kind, only))
        cursor = batch.cursor
        if chunk:
            yield chunk
            sent = time.monotonic()
        if batch.events or batch.gap:
            continue  # more may be waiting right behind
        if not forever:
            return
        idle = time.monotonic() - sent
        if idle >= KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            sent = time.monotonic()
            idle = 0.0
        await feed.wait(cursor, KEEPALIVE_SECONDS - idle)
