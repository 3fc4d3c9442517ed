"""PostgreSQL restarted under load, on a private server of this test's own (never the machine's shared one): a clean
stop (`pg_ctl stop -m fast`) held for a few seconds, then a crash (`-m immediate`) held likewise, each time started
again on the same port and data. Meanwhile six clients keep sending chats on four surfaces to one Gatehouse.

While the database is away every refusal is a 503 `database_unavailable` with Retry-After in the surface's own
shape, and /readyz says 503; afterwards Gatehouse recovers by itself (its pools reconnect, /readyz is 200 again)
and every request answered 2xx is counted once: usage, request log and the fake upstream's ledger agree, and no
reservation is left held. The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import write_config
from tests.e2e.infra.checks import Account, check_audit_chain, check_nothing_lost, new_account
from tests.e2e.infra.traffic import Answer, Traffic, summary, traffic, wait_until
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.private_postgres import PrivatePostgres, StopMode, private_postgres
from tests.support.server import GatehouseServer, base_env, run_gatehouse

pytestmark = [pytest.mark.postgres]
UPSTREAM_KEY = "upstream-secret-key"
REFUSALS_WANTED = 12  # requests refused while the database is away, before it is started again
MIN_OUTAGE_SECONDS = 3.0


@dataclass
class Setup:
    postgres: PrivatePostgres
    server: GatehouseServer
    upstream: FakeUpstream
    account: Account


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("postgres-restart")
    with run_fake_upstream(api_key=UPSTREAM_KEY) as upstream, private_postgres() as postgres:
        env = base_env(
            postgres.create_database(),
            workdir / "data",
            GATEHOUSE_CONFIG=str(write_config(workdir / "gatehouse.yaml", upstream.url)),
            RATE_LIMIT_PER_MINUTE="100000",
            REQUEST_LOG_FLUSH_SECONDS="0.2",
            SHUTDOWN_DRAIN_SECONDS="0",  # the teardown's stop: no proxy to drain from
            QUOTA_CHECKPOINT_SECONDS="0.5",
        )
        with run_gatehouse(env, workdir=workdir, timeout=120) as server, server.client() as admin:
            yield Setup(postgres, server, upstream, new_account(admin, "pg-restart"))


def _readyz(server: GatehouseServer) -> int:
    try:
        return httpx.get(server.url + "/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _outage(setup: Setup, load: Traffic, mode: StopMode) -> dict[str, float | int]:
    """Stop PostgreSQL (`mode`) until requests are refused and /readyz says so, start it again; the figures."""
    stopped_at = time.monotonic()
    setup.postgres.stop(mode)
    wait_until(lambda: _readyz(setup.server) == 503, "/readyz says 503 while the database is away", 15)

    def refused(answers: list[Answer]) -> bool:
        return sum(1 for a in answers if a.started >= stopped_at and a.status == 503) >= REFUSALS_WANTED

    load.wait_for(refused, f"{REFUSALS_WANTED} requests refused while the database is away")
    # An admin change and its audit event are one transaction: refused whole, in the same documented way.
    with setup.server.client() as admin:
        change = admin.post("/admin/users", json={"email": f"refused-{time.time_ns()}@example.com"})
    assert change.status_code == 503, change.text
    assert change.json()["error"]["code"] == "database_unavailable" and change.headers["retry-after"], change.text
    if (left := MIN_OUTAGE_SECONDS - (time.monotonic() - stopped_at)) > 0:
        time.sleep(left)
    started_at = time.monotonic()
    setup.postgres.start()
    ready = wait_until(lambda: _readyz(setup.server) == 200, "/readyz back to 200 without a restart", 30)

    def answered_again(answers: list[Answer]) -> bool:
        return sum(1 for a in answers if a.started >= started_at and a.ok) >= 20

    load.wait_for(answered_again, "requests answered again after the restart")
    window = [a for a in load.answers if stopped_at <= a.started < started_at]
    served = min(a.ended for a in load.since(started_at) if a.ok) - started_at
    figures = {
        "outage_s": round(started_at - stopped_at, 2),
        "requests_in_outage": len(window),
        "refused_503": sum(1 for a in window if a.status == 503),
        "readyz_200_after_s": round(ready, 2),
        "first_2xx_after_s": round(served, 2),
    }
    print(f"{mode} stop:", figures, summary(window))
    return figures


def _check_refusals(answers: list[Answer]) -> None:
    """Every answer is a 2xx or a documented 503 in its surface's shape, with Retry-After."""
    for answer in answers:
        if answer.ok:
            continue
        assert answer.status == 503, (answer, summary(answers))
        assert answer.retry_after is not None, answer
        if answer.surface == "ollama":
            assert answer.code is not None and "database" in answer.code.lower(), answer
        else:
            assert answer.code == "database_unavailable", answer


def test_postgres_restarted_under_load_loses_nothing_and_recovers_by_itself(setup: Setup) -> None:
    with traffic(setup.server.url, setup.account.key) as load:
        load.wait_for(lambda answers: sum(a.ok for a in answers) >= 20, "traffic flowing")
        fast = _outage(setup, load, "fast")
        crash = _outage(setup, load, "immediate")
    answers = list(load.answers)
    print("all:", len(answers), summary(answers))
    assert fast["refused_503"] and crash["refused_503"]
    _check_refusals(answers)
    assert setup.server.process.poll() is None, "Gatehouse was never restarted"
    log = setup.server.log_text()
    assert "unhandled_error" not in log and "request_log_rows_dropped" not in log
    with setup.server.client() as admin:
        check_nothing_lost(admin, setup.account, answers, setup.upstream)
        check_audit_chain(admin)
