"""GET /admin/events over real HTTP: a monitor follows the feed while things happen, reconnects with
Last-Event-ID, filters kinds; plain users are refused; with Redis, two feeds share one stream.

httpx's in-process transport buffers whole answers (an endless stream would never arrive), so the app is
served by uvicorn in this process, on a free port: tests still reach `runtime` to publish directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from argon2 import PasswordHasher

from gatehouse.app import create_app
from gatehouse.auth import passwords
from gatehouse.core.feed import parse_id
from gatehouse.core.feed_redis import STREAM, RedisEventFeed
from gatehouse.runtime import Runtime
from tests.conftest import Harness, make_settings
from tests.support.server import ADMIN_KEY, free_port

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps bootstrap at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@dataclass
class Live:
    """The app served over HTTP in this process, and an httpx client authenticated as the bootstrap admin."""

    server: uvicorn.Server
    client: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.server.config.app.state.runtime  # type: ignore[union-attr]
        return runtime


@pytest.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    """The app on a fresh database (SQLite and PostgreSQL), served by uvicorn on a free port."""
    app = create_app(make_settings(database_url, tmp_path))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(60):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
            yield Live(server, client)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _member(client: httpx.AsyncClient, email: str, role: str = "user") -> tuple[int, str]:
    user = (await client.post("/admin/users", json={"email": email, "role": role})).json()
    key = (await client.post(f"/admin/users/{user['id']}/keys", json={"name": "k"})).json()["key"]
    return int(user["id"]), str(key)


class Follower:
    """An open /admin/events response, read event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def block(self, timeout: float = 5) -> dict[str, str]:
        """The next block of fields (an event, a comment, a retry hint)."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = await anext(self._lines)
                if line == "":
                    if fields:
                        return fields
                    continue
                name, _, value = line.partition(":")
                fields[name] = fields.get(name, "") + value.removeprefix(" ")

    async def event(self, timeout: float = 5) -> dict[str, Any]:
        """The next event (comments skipped): {"id", "event", "data"} with data parsed."""
        while True:
            fields = await self.block(timeout)
            if "event" in fields:
                return {"id": fields.get("id"), "event": fields["event"], "data": orjson.loads(fields["data"])}

    async def events_until(self, kind: str, timeout: float = 5) -> list[dict[str, Any]]:
        """Events up to and including the first of `kind`."""
        received = []
        while True:
            received.append(await self.event(timeout))
            if received[-1]["event"] == kind:
                return received


@asynccontextmanager
async def following(
    client: httpx.AsyncClient, key: str | None = None, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[Follower]:
    """Follow /admin/events; yields once the feed has fixed where it starts (nothing published later is missed)."""
    sent = {**({"authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    async with client.stream("GET", "/admin/events", headers=sent, params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
        follower = Follower(response)
        assert "retry" in await follower.block()
        yield follower


async def test_override_event_reaches_a_connected_monitor(live: Live) -> None:
    """The feed's side (the override endpoint's own event: tests/e2e/upstreams/test_health.py)."""
    _, monitor = await _member(live.client, "monitor@example.com", "monitor")
    async with following(live.client, monitor) as follower:
        override = {"upstream": "gpu-1", "state": "down", "reason": "maintenance", "by": "admin@example.com"}
        live.runtime.feed.publish("upstream.override", override)
        event = await follower.event()
    assert event["event"] == "upstream.override"
    body = event["data"]
    assert body["id"] == event["id"] and body["kind"] == "upstream.override" and body["data"] == override
    assert body["replica"] == live.runtime.feed.replica and body["at"].endswith("+00:00")


async def test_blocks_and_status_changes_reach_a_follower(live: Live) -> None:
    user_id, _ = await _member(live.client, "blocked@example.com")
    async with following(live.client) as follower:
        blocked = await live.client.post(f"/admin/users/{user_id}/block", json={"reason": "abuse"})
        assert blocked.status_code == 200
        event = await follower.event()
        assert event["event"] == "user.blocked"
        assert event["data"]["data"] == {
            "user_id": user_id,
            "reason": "abuse",
            "until": None,
            "by": "admin@example.com",
        }
        assert (await live.client.post(f"/admin/users/{user_id}/unblock")).status_code == 200
        assert (await follower.event())["event"] == "user.unblocked"
        assert (await live.client.post(f"/admin/users/{user_id}/disable")).status_code == 200
        assert (await follower.event())["event"] == "user.disabled"
        assert (await live.client.post(f"/admin/users/{user_id}/enable")).status_code == 200
        assert (await follower.event())["data"]["data"] == {"user_id": user_id, "by": "admin@example.com"}


async def test_reconnecting_with_last_event_id_gets_only_later_events(live: Live) -> None:
    events = live.runtime.feed
    async with following(live.client) as follower:
        for n in range(3):
            events.publish("test.numbered", {"n": n})
        first = await follower.event()
    assert first["data"]["data"] == {"n": 0}
    async with following(live.client, headers={"last-event-id": first["id"]}) as again:
        replayed = [await again.event(), await again.event()]
        events.publish("test.numbered", {"n": 3})
        replayed.append(await again.event())
    assert [e["data"]["data"]["n"] for e in replayed] == [1, 2, 3]
    # The same with the query parameter, for clients that cannot set headers; and polling (follow=false) ends.
    polled = await live.client.get("/admin/events", params={"last_event_id": replayed[1]["id"], "follow": "false"})
    assert polled.status_code == 200
    assert [line for line in polled.text.splitlines() if line.startswith("id: ")] == [f"id: {replayed[2]['id']}"]


async def test_an_id_older_than_the_buffer_starts_with_a_gap(live: Live) -> None:
    events = live.runtime.feed
    events.publish("test.first", {})
    first = events.latest_id
    assert first is not None
    for n in range(1001):
        events.publish("test.filler", {"n": n})
    async with following(live.client, headers={"last-event-id": first}) as follower:
        gap = await follower.event()
        assert gap["event"] == "gap" and gap["id"] is None and gap["data"]["after"] == first
        assert (await follower.event())["data"]["data"] == {"n": 1}  # the oldest kept: 1000 of them


async def test_kinds_filter(live: Live) -> None:
    async with following(live.client, kinds="upstream.,stream.ended") as follower:
        live.runtime.feed.publish("stream.started", {"id": "x"})
        live.runtime.feed.publish("upstream.state", {"upstream": "a"})
        live.runtime.feed.publish("user.blocked", {"user_id": 1})
        live.runtime.feed.publish("stream.ended", {"id": "x"})
        received = await follower.events_until("stream.ended")
    assert [e["event"] for e in received] == ["upstream.state", "stream.ended"]


async def test_streams_terminations_and_rate_limits_are_announced(live: Live) -> None:
    user_id, key = await _member(live.client, "chatty@example.com")
    as_user = {"authorization": f"Bearer {key}"}
    async with following(live.client, kinds="stream.,rate_limit.") as follower:
        assert (await live.client.post("/v1/chat/completions", json=CHAT, headers=as_user)).status_code == 200
        started, ended = await follower.event(), await follower.event()
        assert started["event"] == "stream.started" and ended["event"] == "stream.ended"
        assert started["data"]["data"] == {
            "id": started["data"]["data"]["id"],
            "user_id": user_id,
            "key_id": started["data"]["data"]["key_id"],
            "model": "demo",
            "protocol": "openai",
            "stream": False,
        }
        done = ended["data"]["data"]
        assert done["id"] == started["data"]["data"]["id"] and done["user_id"] == user_id
        assert done["status_code"] == 200 and done["error_code"] is None and done["upstream"]

        # An operator ends a live request: announced once the audit row is committed.
        live_stream = live.runtime.streams.open(
            user_id=user_id, user_email="chatty@example.com", key_id=None, model="demo", protocol="openai", stream=True
        )
        assert (await follower.event())["event"] == "stream.started"
        terminated = await live.client.post(f"/admin/streams/{live_stream.id}/terminate", json={"reason": "budget"})
        assert terminated.status_code == 200
        event = await follower.event()
        assert event["event"] == "stream.terminated"
        assert event["data"]["data"] == {
            "id": live_stream.id,
            "reason": "budget",
            "by": "admin@example.com",
            "replica": live.runtime.streams.replica,
        }
        live.runtime.streams.close(live_stream)
        assert (await follower.event())["data"]["data"]["terminated"] == "budget"

        limits = await live.client.put("/admin/rate-limits", json={"limits": {"chat": 0}})
        assert limits.status_code == 200
        for _ in range(3):  # announced once, not per refusal
            assert (await live.client.post("/v1/chat/completions", json=CHAT, headers=as_user)).status_code == 429
        live.runtime.feed.publish("stream.marker", {})
        received = await follower.events_until("stream.marker")
    assert [e["event"] for e in received] == ["rate_limit.hit", "stream.marker"]
    hit = received[0]["data"]["data"]
    assert hit == {"action": "chat", "subject": f"u{user_id}", "per": "user", "limit": 0, "window": "hour"}


async def test_a_client_that_leaves_ends_its_follower(live: Live) -> None:
    events = live.runtime.feed
    async with following(live.client):
        async with asyncio.timeout(5):
            while events.waiting != 1:
                await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        while events.waiting != 0:
            await asyncio.sleep(0.01)


async def test_only_monitors_and_above_may_follow(harness: Harness) -> None:
    _, user_key = await _member(harness.client, "plain@example.com")
    _, monitor_key = await _member(harness.client, "watcher@example.com", "monitor")
    refused = await harness.client.get("/admin/events", headers=harness.as_key(user_key))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    anonymous = await harness.client.get("/admin/events", headers={"authorization": ""})
    assert anonymous.status_code == 401
    # (The in-process transport buffers whole answers: poll, which ends.)
    harness.runtime.feed.publish("test.kind", {})
    polled = await harness.client.get(
        "/admin/events", params={"follow": "false", "last_event_id": "0"}, headers=harness.as_key(monitor_key)
    )
    assert polled.status_code == 200 and "event: test.kind" in polled.text


# --- with Redis: one stream, every replica -----------------------------------------------------------


@pytest.mark.redis
async def test_redis_feeds_share_events_and_replay_across_replicas(redis_url: str, redis_key_prefix: str) -> None:
    a = RedisEventFeed(redis_url, prefix=redis_key_prefix, replica="a")
    b = RedisEventFeed(redis_url, prefix=redis_key_prefix, replica="b")
    await a.start()
    await b.start()
    try:
        cursor = None
        async with asyncio.timeout(5):
            while (cursor := b.latest_id) is None:
                await asyncio.sleep(0.01)
        a.publish("upstream.state", {"upstream": "gpu-1", "state": "down"})
        a.publish("upstream.state", {"upstream": "gpu-1", "state": "up"})
        async with asyncio.timeout(5):
            while len((batch := await b.read(cursor)).events) < 2:
                await asyncio.sleep(0.01)
        first, second = batch.events
        assert first.replica == "a" and first.data == {"upstream": "gpu-1", "state": "down"}
        assert first.key < second.key and parse_id(first.id) == first.key
        assert first.id.split(".")[0] == second.id.split(".")[0]  # published together: one stream entry
        # A client that saw `first` on A reconnects to B: it gets the rest, not `first` again.
        async with asyncio.timeout(5):
            while a.latest_id != second.id:
                await asyncio.sleep(0.01)
        assert [e.id for e in (await b.read(first.id)).events] == [second.id]
        assert [e.id for e in (await a.read(first.id)).events] == [second.id]
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_redis_replay_older_than_the_ring_reads_the_stream_and_reports_trimming(
    redis_url: str, redis_key_prefix: str
) -> None:
    feed = RedisEventFeed(redis_url, prefix=redis_key_prefix, replica="a", buffer=5)
    await feed.start()
    try:
        async with asyncio.timeout(10):
            for n in range(20):  # one at a time: one stream entry each
                feed.publish("test.n", {"n": n})
                while (await _stream_length(redis_url, redis_key_prefix)) < n + 1:
                    await asyncio.sleep(0.005)
            while len(feed._ring) < 5:
                await asyncio.sleep(0.01)
        everything = (await feed.read("0-0")).events
        assert [e.data["n"] for e in everything] == list(range(20))  # from the stream, past the ring of 5
        third = everything[2].id
        older = await feed.read(third)
        assert not older.gap and older.events[0].data == {"n": 3}
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.xtrim(redis_key_prefix + STREAM, maxlen=10, approximate=False)
        finally:
            await client.aclose()
        trimmed = await feed.read(third)
        assert trimmed.gap and trimmed.events[0].data == {"n": 10}
    finally:
        await feed.close()


async def _stream_length(url: str, prefix: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.xlen(prefix + STREAM))
    finally:
        await client.aclose()
