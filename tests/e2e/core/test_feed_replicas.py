"""The live event feed across real replicas (PostgreSQL + Redis): an event on one reaches followers of the
other, and a client resumes on either with the Last-Event-ID it got from the other. Also: a stopping server
ends its followers at once instead of waiting for them."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gatehouse.core.feed import parse_id
from tests.conftest import fresh_database
from tests.e2e.conftest import two_replicas
from tests.support.server import GatehouseServer, base_env, run_gatehouse

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    """Replica A and replica B sharing PostgreSQL and Redis (with a key prefix of their own)."""
    with two_replicas(tmp_path_factory.mktemp("event-replicas"), DEMO_UPSTREAM="true") as pair:
        yield pair


class Follower:
    """An open /admin/events response, read event by event (httpx's read timeout bounds each wait)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()

    def block(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
        raise EOFError("the feed ended")

    def event(self) -> dict[str, Any]:
        while True:
            fields = self.block()
            if "event" in fields:
                return {"id": fields.get("id"), "event": fields["event"], "data": orjson.loads(fields["data"])}

    def until(self, kind: str) -> dict[str, Any]:
        """The first event of `kind` (others skipped)."""
        while (event := self.event())["event"] != kind:
            pass
        return event


@contextmanager
def following(server: GatehouseServer, **headers: str) -> Iterator[Follower]:
    """Follow a server's feed as its admin; yields once the feed has fixed where it starts."""
    with (
        httpx.Client(base_url=server.url, timeout=httpx.Timeout(10, read=20)) as client,
        client.stream(
            "GET", "/admin/events", headers={"authorization": f"Bearer {server.admin_key}", **headers}
        ) as response,
    ):
        assert response.status_code == 200
        follower = Follower(response)
        assert "retry" in follower.block()
        yield follower


def _new_user(admin: httpx.Client) -> tuple[int, str]:
    user = admin.post("/admin/users", json={"email": f"ev-{time.time_ns()}@example.com"}).json()
    key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()["key"]
    return int(user["id"]), str(key)


@pytest.mark.postgres
@pytest.mark.redis
def test_an_event_on_one_replica_reaches_followers_of_the_other(
    replicas: tuple[GatehouseServer, GatehouseServer],
) -> None:
    a, b = replicas
    with a.client() as admin_a, following(b) as on_b, following(a) as on_a:
        user_id, key = _new_user(admin_a)
        assert admin_a.post(f"/admin/users/{user_id}/block", json={"reason": "abuse"}).status_code == 200
        seen_on_b = on_b.until("user.blocked")
        assert seen_on_b["data"]["data"]["user_id"] == user_id
        assert parse_id(seen_on_b["id"]) is not None and "-" in seen_on_b["id"]  # a stream place, the same everywhere
        assert on_a.until("user.blocked")["id"] == seen_on_b["id"]
        assert admin_a.post(f"/admin/users/{user_id}/unblock").status_code == 200
        with b.client(key) as user_b:
            assert user_b.post("/v1/chat/completions", json=CHAT).status_code == 200
        started = on_a.until("stream.started")["data"]
        assert started["data"]["user_id"] == user_id and started["replica"] != seen_on_b["data"]["replica"]
        assert on_a.until("stream.ended")["data"]["data"]["status_code"] == 200


@pytest.mark.postgres
@pytest.mark.redis
def test_a_client_resumes_on_the_other_replica_with_its_last_event_id(
    replicas: tuple[GatehouseServer, GatehouseServer],
) -> None:
    a, b = replicas
    with a.client() as admin_a:
        user_id, _ = _new_user(admin_a)
        with following(a) as on_a:
            assert admin_a.post(f"/admin/users/{user_id}/block", json={"reason": "one"}).status_code == 200
            last = on_a.until("user.blocked")
        # Disconnected: what happens meanwhile is missed, until the client comes back (to B).
        assert admin_a.post(f"/admin/users/{user_id}/unblock").status_code == 200
        assert admin_a.post(f"/admin/users/{user_id}/block", json={"reason": "two"}).status_code == 200
    time.sleep(0.2)  # sent to Redis within milliseconds; B reads it from there
    with following(b, **{"last-event-id": str(last["id"])}) as on_b:
        missed = [on_b.event(), on_b.event()]
    assert [(e["event"], e["data"]["data"]["user_id"]) for e in missed] == [
        ("user.unblocked", user_id),
        ("user.blocked", user_id),
    ]
    assert missed[1]["data"]["data"]["reason"] == "two"
    assert all(parse_id(e["id"]) > parse_id(last["id"]) for e in missed)  # type: ignore[operator]


def test_a_stopping_server_ends_its_followers_at_once(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as database_url:
        # No drain period (SHUTDOWN_DRAIN_SECONDS, tested in tests/e2e/ha): from the stop itself, followers end at once.
        env = base_env(database_url, tmp_path / "data", DEMO_UPSTREAM="true", SHUTDOWN_DRAIN_SECONDS="0")
        with run_gatehouse(env, workdir=tmp_path) as server, following(server) as follower:
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(EOFError):  # the feed ends cleanly: no keep-alive wait, no graceful timeout
                follower.event()
            server.process.wait(15)
            assert time.monotonic() - started < 5, server.log_text()[-2000:]
            assert '"event":"stopped"' in server.log_text()  # a clean shutdown (uvicorn then re-raises SIGTERM)
