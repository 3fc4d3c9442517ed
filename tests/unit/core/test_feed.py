"""The live event feed in memory: ids, replay after an id, gaps, filters, and the SSE generator."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import orjson
import pytest

from gatehouse.core.feed import EventFeed, parse_id
from gatehouse.core.feed_redis import RedisEventFeed
from gatehouse.monitoring import feed as sse
from gatehouse.monitoring.feed import follow, kind_filter, wanted
from tests.support.server import free_port


def _ids(events: list[Any]) -> list[str]:
    return [e.id for e in events]


def _parse(raw: bytes) -> list[dict[str, str]]:
    """SSE bytes as a list of {field: value} blocks (comments and retry-only blocks included)."""
    blocks = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        blocks.append(fields)
    return blocks


async def test_ids_count_up_and_every_event_carries_kind_time_replica_and_data() -> None:
    feed = EventFeed(replica="r1")
    feed.publish("upstream.state", {"upstream": "a", "state": "down"})
    feed.publish("stream.started", {"id": "abc"})
    batch = await feed.read("0")
    assert _ids(batch.events) == ["1", "2"]
    assert batch.cursor == "2" and not batch.gap
    first = batch.events[0].public()
    assert first["kind"] == "upstream.state" and first["replica"] == "r1"
    assert first["data"] == {"upstream": "a", "state": "down"}
    at = datetime.fromisoformat(first["at"])
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(at.timestamp() - time.time()) < 5
    assert feed.latest_id == "2"


async def test_reading_from_now_returns_nothing_old() -> None:
    feed = EventFeed(replica="r")
    feed.publish("a", {})
    batch = await feed.read(None)
    assert batch.events == [] and batch.cursor == "1" and not batch.gap


async def test_replay_after_an_id_returns_only_later_events() -> None:
    feed = EventFeed(replica="r")
    for n in range(5):
        feed.publish("k", {"n": n})
    batch = await feed.read("2")
    assert _ids(batch.events) == ["3", "4", "5"] and not batch.gap
    assert (await feed.read("5")).events == []
    limited = await feed.read("0", limit=2)
    assert _ids(limited.events) == ["1", "2"] and limited.cursor == "2"


async def test_an_id_older_than_the_buffer_is_a_gap() -> None:
    feed = EventFeed(replica="r", buffer=3)
    for _ in range(6):
        feed.publish("k", {})
    # 1, 2 and 3 fell out of the buffer: after 3, nothing was lost; after 2, event 3 was.
    assert _ids((await feed.read("3")).events) == ["4", "5", "6"]
    assert not (await feed.read("3")).gap
    lost = await feed.read("2")
    assert lost.gap and _ids(lost.events) == ["4", "5", "6"]


async def test_an_id_from_before_a_restart_is_a_gap_and_everything_kept_is_replayed() -> None:
    feed = EventFeed(replica="r")
    empty = await feed.read("500")
    assert empty.gap and empty.events == [] and empty.cursor == "0"
    feed.publish("k", {})
    feed.publish("k", {})
    batch = await feed.read("500")
    assert batch.gap and _ids(batch.events) == ["1", "2"]


@pytest.mark.parametrize("bad", ["abc", "-1", "1-", "1-x", "²", "9" * 50])
async def test_a_malformed_id_is_a_gap_from_now(bad: str) -> None:
    feed = EventFeed(replica="r")
    feed.publish("k", {})
    batch = await feed.read(bad)
    assert batch.gap and batch.events == [] and batch.cursor == "1"


def test_ids_parse_as_numbers_or_stream_entries_and_places() -> None:
    assert parse_id("42") == (42, 0, 0)
    assert parse_id("1732270000000-7.3") == (1732270000000, 7, 3)
    assert parse_id("1-2.9") < parse_id("1-2.10") < parse_id("1-2") < parse_id("1-10.0")  # type: ignore[operator]
    for bad in ("", "1-", "a-1", "1.2", "1-2.", "1-2.x", "1-2-3"):
        assert parse_id(bad) is None, bad


def test_kind_filters_match_exact_kinds_and_prefixes_ending_in_a_dot() -> None:
    only = kind_filter("upstream., stream.started ,")
    assert wanted("upstream.state", only) and wanted("upstream.override_cleared", only)
    assert wanted("stream.started", only)
    assert not wanted("stream.ended", only) and not wanted("upstreams", only) and not wanted("user.blocked", only)
    assert kind_filter(None) is None and kind_filter(" , ") is None
    assert wanted("anything", None)


async def test_a_waiting_follower_wakes_on_publish() -> None:
    feed = EventFeed(replica="r")
    waiter = asyncio.create_task(feed.wait(feed.latest_id, 10))
    await asyncio.sleep(0.01)
    assert feed.waiting == 1
    feed.publish("k", {})
    await asyncio.wait_for(waiter, 1)
    assert feed.waiting == 0


async def test_publish_never_raises_and_odd_data_still_shows() -> None:
    feed = EventFeed(replica="r")
    feed.publish("k", {"when": datetime(2026, 1, 1), 3: {1, 2}, "obj": object()})
    (event,) = (await feed.read("0")).events
    data = orjson.loads(_parse(event.sse())[0]["data"])
    assert data["data"]["when"].startswith("2026-01-01") and "3" in data["data"]


async def _collect(generator: Any, until: int) -> list[dict[str, str]]:
    """Blocks of `generator` until `until` non-comment blocks arrived."""
    raw = b""
    blocks: list[dict[str, str]] = []
    async for chunk in generator:
        raw += chunk
        blocks = [b for b in _parse(raw) if "event" in b]
        if len(blocks) >= until:
            break
    return blocks


async def test_the_sse_stream_replays_then_follows_with_filters() -> None:
    feed = EventFeed(replica="r")
    feed.publish("user.blocked", {"user_id": 1})
    feed.publish("stream.started", {"id": "s1"})
    feed.publish("user.unblocked", {"user_id": 1})
    stream = follow(feed, "1", kind_filter("user."), forever=True)
    assert (await anext(stream)).startswith(b"retry: ")
    received = asyncio.create_task(_collect(stream, 2))
    await asyncio.sleep(0.01)
    feed.publish("user.blocked", {"user_id": 2})
    blocks = await asyncio.wait_for(received, 2)
    assert [(b["id"], b["event"]) for b in blocks] == [("3", "user.unblocked"), ("4", "user.blocked")]
    body = orjson.loads(blocks[1]["data"])
    assert body["id"] == "4" and body["data"] == {"user_id": 2} and body["replica"] == "r"
    await stream.aclose()


async def test_the_sse_stream_announces_a_gap_first() -> None:
    feed = EventFeed(replica="r", buffer=2)
    for _ in range(4):
        feed.publish("k", {})
    blocks = _parse(b"".join([chunk async for chunk in follow(feed, "1", None, forever=False)]))
    assert blocks[0] == {"retry": "3000"}
    assert blocks[1]["event"] == "gap" and "id" not in blocks[1]
    assert orjson.loads(blocks[1]["data"])["resumes_at"] == "3"
    assert [b["id"] for b in blocks[2:]] == ["3", "4"]


async def test_an_idle_stream_sends_keep_alives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    stream = follow(EventFeed(replica="r"), None, None, forever=True)
    await anext(stream)
    assert await asyncio.wait_for(anext(stream), 2) == b": keep-alive\n\n"
    await stream.aclose()


async def test_a_cancelled_follower_leaves_nothing_waiting() -> None:
    feed = EventFeed(replica="r")

    async def consume() -> None:
        async for _ in follow(feed, None, None, forever=True):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.02)
    assert feed.waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert feed.waiting == 0


async def test_stopping_the_feed_ends_its_followers() -> None:
    feed = EventFeed(replica="r")
    chunks = asyncio.create_task(_collect(follow(feed, None, None, forever=True), 1))
    await asyncio.sleep(0.02)
    feed.stop_following()
    assert await asyncio.wait_for(chunks, 1) == []
    assert [c async for c in follow(feed, None, None, forever=True)] == [b"retry: 3000\n\n"]


async def test_without_redis_publish_neither_raises_nor_blocks_and_close_is_prompt() -> None:
    feed = RedisEventFeed(f"redis://127.0.0.1:{free_port()}/0", prefix="test:", replica="r")
    await feed.start()
    started = time.perf_counter()
    for n in range(100):
        feed.publish("k", {"n": n})
    assert time.perf_counter() - started < 0.1
    await asyncio.sleep(0.1)  # the sender fails and retries in the background
    batch = await feed.read(None)
    assert batch.events == []
    started = time.perf_counter()
    await feed.close()
    assert time.perf_counter() - started < 5
