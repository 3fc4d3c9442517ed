"""Upstreams with health: failing ones are routed around, overrides take effect at once, drain lets live
streams finish, the breaker opens and a probe closes it, and provisioning validates."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Harness, make_settings, running_app
from tests.e2e.conftest import UPSTREAM_KEY
from tests.support.accounts import create_member
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import ADMIN_KEY, base_env, free_port, run_gatehouse

MESSAGES = [{"role": "user", "content": "hi"}]
SERVED = ["fake-chat", "fake-slow", "fake-long"]


@pytest.fixture
def primary() -> Iterator[FakeUpstream]:
    """An upstream of this test's own, which the test makes fail."""
    with run_fake_upstream() as upstream:
        yield upstream


def _config(path: Path, primary_url: str, backup: FakeUpstream) -> Path:
    upstreams = [
        {"name": "primary", "kind": "openai", "base_url": primary_url, "models": SERVED, "discover": False},
        {
            "name": "backup",
            "kind": "openai",
            "base_url": backup.url,
            "api_key": UPSTREAM_KEY,
            "models": SERVED,
            "discover": False,
        },
    ]
    path.write_text(yaml.safe_dump({"upstreams": upstreams}))
    return path


@asynccontextmanager
async def gateway(
    database_url: str, tmp_path: Path, primary_url: str, backup: FakeUpstream, **overrides: Any
) -> AsyncIterator[Harness]:
    """Gatehouse with `primary` first and `backup` second for the same models; fast probes."""
    values: dict[str, Any] = {
        "gatehouse_config": _config(tmp_path / "gatehouse.yaml", primary_url, backup),
        "upstream_probe_seconds": 0.2,
        "upstream_probe_timeout": 0.5,
        "upstream_connect_timeout": 0.5,
        "upstream_read_timeout": 1.0,
        "upstream_breaker_failures": 3,
    }
    values.update(overrides)
    async with running_app(make_settings(database_url, tmp_path, **values)) as harness:
        yield harness


async def chat(harness: Harness, model: str = "fake-chat") -> tuple[int, float]:
    started = time.perf_counter()
    response = await harness.client.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
    assert response.status_code == 200, response.text
    return response.status_code, time.perf_counter() - started


async def upstream_view(harness: Harness, name: str) -> dict[str, Any]:
    listed = (await harness.client.get("/admin/upstreams")).json()
    return next(u for u in listed if u["name"] == name)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def routed_to(harness: Harness, model: str = "fake-chat") -> list[str]:
    return [r.upstream.name for r in harness.runtime.upstreams.routes(model)]


@pytest.mark.parametrize("failure", ["refused", "error", "hang"])
async def test_a_failing_upstream_is_routed_around(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream, failure: str
) -> None:
    with run_fake_upstream() as primary:
        async with gateway(database_url, tmp_path, primary.url, fake_upstream) as harness:
            await eventually(lambda: _state_is(harness, "primary", "up"))
            before = primary.stats()["chat_requests"]
            await chat(harness)
            assert primary.stats()["chat_requests"] == before + 1, "primary serves while healthy"

            if failure == "refused":
                primary.process.terminate()
                primary.process.wait()
            else:
                primary.fail(failure)
            # Requests fail over at once (a hang after the read timeout), before any byte reaches the client.
            await chat(harness)
            # The probes (or the breaker) take it out of routing: then requests do not wait on it at all.
            await eventually(lambda: _state_is(harness, "primary", "down"))
            assert routed_to(harness) == ["backup"]
            view = await upstream_view(harness, "primary")
            assert view["last_error"] and view["probe"] == "down"
            for _ in range(3):
                _, took = await chat(harness)
                assert took < 0.5, "a down upstream is not tried"

            if failure != "refused":
                primary.fail("ok")
                await eventually(lambda: _state_is(harness, "primary", "up"))
                before = primary.stats()["chat_requests"]
                await chat(harness)
                assert primary.stats()["chat_requests"] == before + 1, "a probe brought it back"


async def _state_is(harness: Harness, name: str, state: str) -> bool:
    return (await upstream_view(harness, name))["state"] == state


async def test_override_down_stops_traffic_at_once_and_delete_restores(
    database_url: str, tmp_path: Path, primary: FakeUpstream, fake_upstream: FakeUpstream
) -> None:
    async with gateway(database_url, tmp_path, primary.url, fake_upstream, upstream_probe_seconds=3600) as harness:
        view = await upstream_view(harness, "primary")
        assert view["source"] == "config" and view["state"] == "up"
        url = f"/admin/upstreams/{view['id']}/override"

        missing = await harness.client.put(url, json={"state": "down"})
        assert missing.status_code == 422 and "reason" in missing.text
        bad = await harness.client.put(url, json={"state": "sideways", "reason": "x"})
        assert bad.status_code == 422

        down = await harness.client.put(url, json={"state": "down", "reason": "GPU maintenance"})
        assert down.status_code == 200, down.text
        assert down.json()["state"] == "down"
        assert down.json()["override"]["reason"] == "GPU maintenance"
        before = primary.stats()["chat_requests"]
        for _ in range(3):
            await chat(harness)
        assert primary.stats()["chat_requests"] == before, "no request reaches an upstream overridden down"

        audit = (await harness.client.get("/admin/audit", params={"action": "upstream.override_set"})).json()
        assert audit["items"][0]["details"]["state"] == "down"
        assert audit["items"][0]["details"]["reason"] == "GPU maintenance"

        restored = await harness.client.delete(url)
        assert restored.status_code == 200 and restored.json()["state"] == "up"
        assert restored.json()["override"] is None
        await chat(harness)
        assert primary.stats()["chat_requests"] == before + 1
        cleared = (await harness.client.get("/admin/audit", params={"action": "upstream.override_cleared"})).json()
        assert cleared["items"][0]["details"]["before"] == "down"

        # Every upstream of a model out: a 503 that says why, not a 404 or a hang.
        backup = await upstream_view(harness, "backup")
        for upstream in (view, backup):
            put = await harness.client.put(
                f"/admin/upstreams/{upstream['id']}/override", json={"state": "down", "reason": "all out"}
            )
            assert put.status_code == 200
        refused = await harness.client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": MESSAGES})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "no_usable_upstream"
        assert "set by an operator" in refused.json()["error"]["message"]

        # An override `up` keeps an upstream in routing whatever the probes say.
        await harness.client.delete(f"/admin/upstreams/{backup['id']}/override")
        forced = await harness.client.put(url, json={"state": "up", "reason": "probe is wrong"})
        assert forced.json()["state"] == "up"
        primary.fail("error")
        await harness.runtime.upstreams.probe_all()
        assert (await upstream_view(harness, "primary"))["probe"] == "down"
        assert routed_to(harness)[0] == "primary"


async def test_drain_lets_the_live_stream_finish(
    database_url: str, tmp_path: Path, primary: FakeUpstream, fake_upstream: FakeUpstream
) -> None:
    async with gateway(database_url, tmp_path, primary.url, fake_upstream, upstream_probe_seconds=3600) as harness:
        view = await upstream_view(harness, "primary")
        received: list[bytes] = []

        async def stream() -> int:
            body = {"model": "fake-long", "messages": MESSAGES, "stream": True}
            async with harness.client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for chunk in response.aiter_bytes():
                    received.append(chunk)
                return response.status_code

        live = asyncio.create_task(stream())
        upstream = harness.runtime.upstreams.get("primary")
        assert upstream is not None
        await eventually(lambda: _true(upstream.inflight == 1))

        drained = await harness.client.put(
            f"/admin/upstreams/{view['id']}/override", json={"state": "drain", "reason": "moving hosts"}
        )
        assert drained.json()["state"] == "drain" and drained.json()["inflight"] == 1
        before = primary.stats()["chat_requests"]
        await chat(harness)
        assert primary.stats()["chat_requests"] == before, "new requests avoid a draining upstream"

        assert await live == 200
        text = b"".join(received)
        assert text.rstrip().endswith(b"data: [DONE]") and b'"error"' not in text, "the live stream finished"
        assert text.count(b'"content"') >= 200
        assert upstream.inflight == 0
        assert (await upstream_view(harness, "primary"))["inflight"] == 0


async def _true(value: bool) -> bool:
    return value


async def test_breaker_opens_after_consecutive_failures_and_a_probe_closes_it(
    database_url: str, tmp_path: Path, primary: FakeUpstream, fake_upstream: FakeUpstream
) -> None:
    async with gateway(database_url, tmp_path, primary.url, fake_upstream, upstream_probe_seconds=3600) as harness:
        client = harness.client
        # With a healthy alternative a failing upstream goes to the back of the queue; alone, it is tried
        # until its breaker opens.
        backup = await upstream_view(harness, "backup")
        await client.put(f"/admin/upstreams/{backup['id']}/override", json={"state": "down", "reason": "test"})
        primary.fail("error")
        body = {"model": "fake-chat", "messages": MESSAGES}
        for attempt in range(1, 4):
            failed = await client.post("/v1/chat/completions", json=body)
            assert failed.status_code == 502 and failed.json()["error"]["code"] == "upstream_error"
            view = await upstream_view(harness, "primary")
            assert view["consecutive_failures"] == attempt
            assert view["state"] == ("down" if attempt == 3 else "degraded")
        assert view["breaker_open"] is True
        assert "circuit open after 3 consecutive failures" in view["last_error"]
        tried = primary.stats()["requests"]
        refused = await client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_usable_upstream"
        assert primary.stats()["requests"] == tried, "an open breaker sends nothing"

        primary.fail("ok")
        await harness.runtime.upstreams.probe_all()  # what the background probe does
        view = await upstream_view(harness, "primary")
        assert view["state"] == "up" and view["breaker_open"] is False
        before = primary.stats()["chat_requests"]
        await chat(harness)
        assert primary.stats()["chat_requests"] == before + 1


async def test_provisioning_validates_and_is_audited(
    database_url: str, tmp_path: Path, primary: FakeUpstream, fake_upstream: FakeUpstream
) -> None:
    async with gateway(database_url, tmp_path, primary.url, fake_upstream, upstream_probe_seconds=3600) as harness:
        client = harness.client

        async def refused(body: dict[str, Any], param: str, code: str) -> None:
            response = await client.post("/admin/upstreams", json=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert (error["param"], error["code"]) == (param, code), error

        good = {"name": "extra", "kind": "openai", "base_url": fake_upstream.url, "api_key": UPSTREAM_KEY}
        await refused({**good, "kind": "mystery"}, "kind", "invalid_upstream")
        await refused({**good, "name": "has spaces"}, "name", "invalid_upstream")
        await refused({**good, "base_url": "ftp://x"}, "base_url", "invalid_upstream")
        await refused({**good, "name": "primary"}, "name", "upstream_name_taken")
        dead = f"http://127.0.0.1:{free_port()}"
        await refused({**good, "base_url": dead}, "base_url", "upstream_check_failed")
        await refused({**good, "api_key": "wrong"}, "base_url", "upstream_check_failed")

        created = await client.post("/admin/upstreams", json=good)
        assert created.status_code == 201, created.text
        row = created.json()
        assert UPSTREAM_KEY not in created.text
        assert row["source"] == "api" and row["api_key_set"] is True and row["state"] == "up"
        assert "fake-embed" in row["served_models"], "models discovered on creation"
        assert "extra" in [r.upstream.name for r in harness.runtime.upstreams.routes("fake-embed")]

        unchecked = await client.post(
            "/admin/upstreams", json={**good, "name": "later", "base_url": dead, "skip_check": True}
        )
        assert unchecked.status_code == 201 and unchecked.json()["state"] == "down"

        renamed = await client.patch(f"/admin/upstreams/{row['id']}", json={"name": "extra-2", "read_timeout": 30})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "extra-2" and renamed.json()["read_timeout"] == 30
        broken = await client.patch(f"/admin/upstreams/{row['id']}", json={"base_url": dead})
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "upstream_check_failed"

        configured = await upstream_view(harness, "primary")
        locked = await client.patch(f"/admin/upstreams/{configured['id']}", json={"read_timeout": 5})
        assert locked.status_code == 409 and "GATEHOUSE_CONFIG" in locked.json()["error"]["message"]
        assert (await client.delete(f"/admin/upstreams/{configured['id']}")).status_code == 409

        assert (await client.delete(f"/admin/upstreams/{row['id']}")).status_code == 204
        assert (await client.get(f"/admin/upstreams/{row['id']}")).status_code == 404
        assert "extra-2" not in [r.upstream.name for r in harness.runtime.upstreams.all_routes("fake-embed")]

        actions = [
            e["action"] for e in (await client.get("/admin/audit", params={"target_type": "upstream"})).json()["items"]
        ]
        for action in ("upstream.seeded", "upstream.created", "upstream.updated", "upstream.deleted"):
            assert action in actions
        assert UPSTREAM_KEY not in (await client.get("/admin/audit")).text

        user = await create_member(harness, "user")
        assert (await client.get("/admin/upstreams", headers=harness.as_key(user.key))).status_code == 403
        monitor = await create_member(harness, "monitor")
        assert (await client.get("/admin/upstreams", headers=harness.as_key(monitor.key))).status_code == 200
        assert (
            await client.post("/admin/upstreams", json=good, headers=harness.as_key(monitor.key))
        ).status_code == 403


async def test_seeded_upstreams_follow_the_file(
    database_url: str, tmp_path: Path, primary: FakeUpstream, fake_upstream: FakeUpstream
) -> None:
    async with gateway(database_url, tmp_path, primary.url, fake_upstream, upstream_probe_seconds=3600) as harness:
        names = {u["name"] for u in (await harness.client.get("/admin/upstreams")).json()}
        assert names == {"primary", "backup"}
        settings = harness.settings
    # The file loses `primary`: the next start drops it (and keeps the audit trail).
    config = tmp_path / "gatehouse.yaml"
    data = yaml.safe_load(config.read_text())
    data["upstreams"] = [u for u in data["upstreams"] if u["name"] != "primary"]
    config.write_text(yaml.safe_dump(data))
    async with running_app(settings) as harness:
        names = {u["name"] for u in (await harness.client.get("/admin/upstreams")).json()}
        assert names == {"backup"}
        audit = (await harness.client.get("/admin/audit", params={"action": "upstream.unseeded"})).json()
        assert audit["items"][0]["details"]["name"] == "primary"


def test_the_live_feed_delivers_an_override_to_a_connected_client(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    config = _config(tmp_path / "gatehouse.yaml", fake_upstream.url, fake_upstream)
    env = base_env(database_url, tmp_path / "data", GATEHOUSE_CONFIG=str(config))
    with run_gatehouse(env, workdir=tmp_path) as server, server.client() as admin:
        upstream = next(u for u in admin.get("/admin/upstreams").json() if u["name"] == "primary")
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        with (
            httpx.Client(base_url=server.url, headers=headers, timeout=5) as feed,
            feed.stream("GET", "/admin/events", params={"kinds": "upstream."}) as events,
        ):
            assert events.status_code == 200
            lines = events.iter_lines()
            assert next(lines).startswith("retry:")  # the feed is open: later events reach it
            put = admin.put(
                f"/admin/upstreams/{upstream['id']}/override", json={"state": "drain", "reason": "moving racks"}
            )
            assert put.status_code == 200
            received: dict[str, str] = {}
            for line in lines:
                name, _, value = line.partition(": ")
                if name in ("event", "data", "id"):
                    received[name] = value
                if line == "" and received.get("event") == "upstream.override":
                    break
                if line == "":
                    received = {}
        body = json.loads(received["data"])
        assert body["data"]["upstream"] == "primary" and body["data"]["state"] == "drain"
        assert body["data"]["reason"] == "moving racks" and body["data"]["by"] == "admin@example.com"
        assert received["id"] == body["id"]
