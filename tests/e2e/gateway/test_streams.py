"""Live streams: listed with their user, model, upstream and tokens, and terminated by an operator on
whichever replica holds them (the client sees terminated_by_operator, the upstream is cancelled, usage is
settled, the audit log records it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.services import flush_redis_prefix, redis_server, unique_redis_prefix

MESSAGES = [{"role": "user", "content": "Tell me a long story"}]


class StreamReader:
    """Reads one streamed answer in a thread, so the test can act while it flows."""

    def __init__(self, server: GatehouseServer, path: str, body: dict[str, Any], key: str | None = None) -> None:
        self.lines: list[str] = []
        self.status = 0
        self._thread = threading.Thread(target=self._run, args=(server, path, body, key), daemon=True)
        self._thread.start()

    def _run(self, server: GatehouseServer, path: str, body: dict[str, Any], key: str | None) -> None:
        with server.client(key) as client, client.stream("POST", path, json=body) as response:
            self.status = response.status_code
            for line in response.iter_lines():
                if line:
                    self.lines.append(line)

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"


def _wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _live(server: GatehouseServer, model: str) -> dict[str, Any] | None:
    with server.client() as admin:
        items = admin.get("/admin/streams").json()["items"]
    return next((s for s in items if s["model"] == model and s["tokens"] > 0), None)


@pytest.mark.parametrize(("path", "model"), [("/v1/chat/completions", "oa-long"), ("/api/chat", "ol-long")])
def test_operator_terminates_a_live_stream(
    server: GatehouseServer, fake_upstream: FakeUpstream, path: str, model: str
) -> None:
    disconnects = fake_upstream.stats()["disconnects"]
    reader = StreamReader(server, path, {"model": model, "messages": MESSAGES, "stream": True})
    stream = _wait_for(lambda: _live(server, model))
    assert stream["user_email"] == "admin@example.com" and stream["upstream"] in {"up-openai", "up-ollama"}
    with server.client() as admin:
        response = admin.post(f"/admin/streams/{stream['id']}/terminate", json={"reason": "maintenance"})
    assert response.status_code == 200, response.text
    reader.join()
    last = orjson.loads(reader.lines[-1].removeprefix("data: "))
    if path.startswith("/v1/"):
        assert last["error"]["code"] == "terminated_by_operator"
        assert "maintenance" in last["error"]["message"]
    else:
        assert "maintenance" in last["error"]
    fake_upstream.wait_for_stats(lambda s: s["disconnects"] > disconnects, timeout=3)
    assert _live(server, model) is None
    with server.client() as admin:
        audit = admin.get("/admin/audit", params={"action": "stream.terminated", "target_id": stream["id"]}).json()
        usage = admin.get("/admin/usage").json()
    assert audit["items"][0]["details"]["reason"] == "maintenance"
    assert all(row["reserved_tokens"] == 0 for row in usage)


def test_unknown_stream_is_404(server: GatehouseServer) -> None:
    with server.client() as admin:
        response = admin.post("/admin/streams/0123456789abcdef/terminate", json={"reason": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "stream_not_found"


@pytest.fixture(scope="module")
def replicas(
    fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    """Two replicas on PostgreSQL + Redis, routing to the fake upstream."""
    workdir: Path = tmp_path_factory.mktemp("stream-replicas")
    prefix = unique_redis_prefix()
    with fresh_database("postgres", workdir) as database_url:
        config = write_config(workdir / "gatehouse.yaml", fake_upstream.url)
        env = base_env(
            database_url, workdir / "data", GATEHOUSE_CONFIG=str(config), REDIS_URL=redis_server(), REDIS_PREFIX=prefix
        )
        with run_gatehouse(env, workdir=workdir) as a, run_gatehouse(env, workdir=workdir) as b:
            yield a, b
    flush_redis_prefix(redis_server(), prefix)


@pytest.mark.postgres
@pytest.mark.redis
def test_a_stream_on_one_replica_is_terminated_through_another(
    replicas: tuple[GatehouseServer, GatehouseServer],
) -> None:
    a, b = replicas
    reader = StreamReader(b, "/v1/chat/completions", {"model": "oa-long", "messages": MESSAGES, "stream": True})
    stream = _wait_for(lambda: _live(a, "oa-long"))  # A sees B's stream through B's snapshot
    with a.client() as admin:
        response = admin.post(f"/admin/streams/{stream['id']}/terminate", json={"reason": "over budget"})
    assert response.status_code == 200 and response.json()["status"] == "terminating"
    reader.join()
    last = orjson.loads(reader.lines[-1].removeprefix("data: "))
    assert last["error"]["code"] == "terminated_by_operator"
    with a.client() as admin:
        assert admin.get("/admin/audit", params={"action": "stream.terminated"}).json()["items"]
    assert httpx.get(b.url + "/healthz").status_code == 200
