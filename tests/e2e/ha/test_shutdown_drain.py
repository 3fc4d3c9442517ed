"""One `gatehouse serve` on SIGTERM, on SQLite and PostgreSQL: /readyz says "draining" at once while requests are
still served (with `Connection: close`), then no new connection is accepted, the long streams on every client surface
end at SHUTDOWN_DEADLINE_SECONDS with `shutdown_deadline` in their own protocol's shape, their usage is settled
(what was streamed is counted, nothing stays reserved) and the process exits."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.e2e.ha.surfaces import SHUTDOWN_CODE, SURFACES, StreamResult, query, stream
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import ADMIN_KEY, GatehouseServer, base_env, run_gatehouse

DRAIN_SECONDS = 2.0
DEADLINE_SECONDS = 2.0
TOKEN_DELAY = 0.05  # fake-long: 200 tokens, 10 s; fake-chat: 8 tokens, 0.4 s
LONG_MODELS = {"chat": "oa-long", "responses": "oa-long", "messages": "an-long", "ollama": "ol-long"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """An upstream of this module's own: its ledger counts only these requests."""
    with run_fake_upstream(api_key="upstream-secret-key", token_delay=TOKEN_DELAY) as fake:
        yield fake


def _wait(condition: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def _refuses(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=1, trust_env=False)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def _long_streams(server: GatehouseServer) -> tuple[threading.Thread, list[StreamResult]]:
    """One long stream per client surface, in a thread of their own."""
    results: list[StreamResult] = []

    async def run() -> None:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60, trust_env=False) as client:
            results.extend(
                await asyncio.gather(
                    *(stream(client, surface, LONG_MODELS[surface], f"long {surface}") for surface in SURFACES)
                )
            )

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread, results


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigterm_drains_then_ends_long_streams_at_the_deadline(
    backend: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.reset()
    with fresh_database(backend, tmp_path) as database_url:
        env = base_env(
            database_url,
            tmp_path / "data",
            GATEHOUSE_CONFIG=str(write_config(tmp_path / "gatehouse.yaml", upstream.url)),
            SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS),
            SHUTDOWN_DEADLINE_SECONDS=str(DEADLINE_SECONDS),
            REQUEST_LOG_FLUSH_SECONDS="0.2",
        )
        with run_gatehouse(env, workdir=tmp_path) as server:
            thread, results = _long_streams(server)
            _wait(lambda: upstream.stats()["in_flight"] == len(SURFACES), "all the long streams under way")
            server.process.send_signal(signal.SIGTERM)

            # Not ready at once, while still serving: a request during the drain is answered, closing its connection.
            with server.client() as client:
                _wait(lambda: client.get("/readyz").status_code == 503, "draining")
                ready = client.get("/readyz")
                assert ready.json()["status"] == "draining", ready.text
                assert ready.headers["connection"] == "close"
                answer = client.post(
                    "/v1/chat/completions",
                    json={"model": "oa-chat", "messages": [{"role": "user", "content": "during the drain"}]},
                )
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            assert answer.headers["connection"] == "close"

            # Then no new connection, while the streams still run; they end at the deadline.
            _wait(lambda: _refuses(server.url), "refusing new connections")
            assert server.process.poll() is None, "exited before its streams ended"
            thread.join(DRAIN_SECONDS + DEADLINE_SECONDS + 20)
            assert not thread.is_alive()
            assert server.process.wait(30) == 128 + signal.SIGTERM
        log = server.log_text()

        assert sorted(r.surface for r in results) == sorted(SURFACES)
        for result in results:
            assert result.failure is None, result
            assert result.ended_by_shutdown, result
            assert 0 < result.chunks < 200, result  # cut short, with what came before the deadline delivered
        assert "shutdown_draining" in log and "shutdown_deadline" in log

        # Settled: one request-log row each, with what was streamed; nothing left reserved.
        rows = query(
            database_url,
            "SELECT model, error_code, status_code, completion_tokens FROM request_log WHERE model LIKE '%long'",
        )
        assert len(rows) == len(SURFACES), rows
        assert {(row[1], row[2]) for row in rows} == {(SHUTDOWN_CODE, 503)}, rows
        received = sum(r.chunks for r in results)
        recorded = sum(row[3] for row in rows)
        # What reached the clients is counted; an OpenAI stream's first chunk (the role, empty content) counts as one.
        assert received <= recorded <= received + 1, (rows, results)
        assert query(database_url, "SELECT count(*) FROM quota_reservation") == [(0,)]
        assert query(database_url, "SELECT sum(reserved_tokens) FROM usage_counter") == [(0,)]
        counted = query(database_url, "SELECT sum(tokens) FROM usage_counter")[0][0]
        logged = query(database_url, "SELECT sum(prompt_tokens + completion_tokens) FROM request_log")[0][0]
        assert counted == logged

        # Against the upstream's own ledger: the long answers were cut short, each after what it had produced (a
        # token per stream may have left the upstream without reaching its client when it was ended).
        ledger = upstream.ledger()["fake-long"]
        assert ledger["cut_short"] == len(SURFACES), ledger
        assert received <= ledger["cut_short_completion_tokens"] <= received + len(SURFACES), (received, ledger)
