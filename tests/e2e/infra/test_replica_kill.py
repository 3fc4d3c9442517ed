"""kill -9 of one of three replicas behind HAProxy (as scripts/local-ha.sh sets it up), on PostgreSQL + Redis, while
nine clients keep sending chats (streamed and not, four surfaces, about a second each) through the proxy; then, on
the same replicas, Redis lost under that load.

The other replicas' clients are unaffected: every request they answered ends complete. The requests that were on the
killed replica at that moment fail at their client (unavoidable), and only those: every request started after the
kill succeeds (HAProxy resends a refused connection to another replica). The killed replica's reservations are
recovered by the others (limits/recovery.py), so nothing stays held and the day's usage is what the upstream served
(within the documented checkpoint bound for the killed requests); a request afterwards is charged exactly.

Redis stopped for a few seconds under load and started again (a Redis of this module's own, never the shared one):
every request is answered 2xx to its end, streams in flight included (quotas live in the database; rate limits fall
back to each replica's share, generous here), and nothing is lost: usage, request log and the upstream's ledger
agree. tests/e2e/core/test_redis_outage.py covers the rest of a Redis outage (documented statuses only, limits
bounded by the local policy, revocations caught up, /readyz and health). The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.e2e.infra.checks import Account, check_audit_chain, check_nothing_lost, logged_of, new_account, usage_of
from tests.e2e.infra.traffic import Answer, one_request, summary, traffic, wait_until
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import GatehouseServer, base_env, free_port, run_gatehouse
from tests.support.services import ThrowawayServer, start_throwaway_redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
UPSTREAM_KEY = "upstream-secret-key"
TOKEN_DELAY = 0.02
MAX_TOKENS = 50  # about a second per answer
CHECKPOINT_SECONDS = 0.5
HEARTBEAT_SECONDS = 1.0
# limits/recovery.py's bound for a recovered request: one checkpoint interval's tokens, plus the prompt's slack.
PER_REQUEST_BOUND = CHECKPOINT_SECONDS / TOKEN_DELAY + 10
NAMES = ("r1", "r2", "r3")
VICTIM = "r2"


@dataclass
class Setup:
    proxy_url: str
    replicas: dict[str, GatehouseServer]
    upstream: FakeUpstream
    account: Account
    redis: ThrowawayServer

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.proxy_url, headers={"authorization": f"Bearer {self.replicas['r1'].admin_key}"}
        )


def _haproxy_config(port: int, replicas: dict[str, GatehouseServer]) -> str:
    """scripts/local-ha.sh's proxy, reduced to what this test needs."""
    servers = "".join(f"    server {name} {server.url.removeprefix('http://')}\n" for name, server in replicas.items())
    return f"""global
    maxconn 4096

defaults
    mode http
    option http-server-close
    retries 3
    option redispatch 1
    timeout connect 3s
    timeout client 60s
    timeout server 60s
    timeout check 2s

frontend gatehouse
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 1s fall 2 rise 2
    retry-on conn-failure empty-response
    http-request disable-l7-retry unless METH_GET
    http-response set-header X-Gatehouse-Backend %[srv_name]
{servers}"""


@contextlib.contextmanager
def haproxy(workdir: Path, replicas: dict[str, GatehouseServer]) -> Iterator[str]:
    """HAProxy in front of the replicas; its URL once it answers through every replica."""
    if shutil.which("haproxy") is None:
        pytest.fail("HAProxy is needed: run `bash scripts/test-services.sh` (as root it installs it)")
    port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(_haproxy_config(port, replicas))
    with (workdir / "haproxy.log").open("wb") as log:
        process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        seen: set[str] = set()

        def every_replica_answers() -> bool:
            assert process.poll() is None, (workdir / "haproxy.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(url + "/readyz", timeout=2)
                seen.add(answer.headers.get("x-gatehouse-backend", ""))
            return seen >= set(replicas)

        wait_until(every_replica_answers, "HAProxy reaches every replica", 30)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("replica-kill")
    redis = start_throwaway_redis()  # this module's own: the Redis test stops it
    with (
        run_fake_upstream(api_key=UPSTREAM_KEY, token_delay=TOKEN_DELAY, tokens=MAX_TOKENS) as upstream,
        fresh_database("postgres", workdir) as database_url,
        contextlib.ExitStack() as stack,
    ):
        env = base_env(
            database_url,
            workdir / "data",
            GATEHOUSE_CONFIG=str(write_config(workdir / "gatehouse.yaml", upstream.url)),
            REDIS_URL=redis.url,
            RATE_LIMIT_PER_MINUTE="100000",
            REQUEST_LOG_FLUSH_SECONDS="0.2",
            SHUTDOWN_DRAIN_SECONDS="0",  # the teardown's stop: no proxy to drain from
            QUOTA_CHECKPOINT_SECONDS=str(CHECKPOINT_SECONDS),
            REPLICA_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
            UPSTREAM_READ_TIMEOUT="30",
        )
        # The first alone (it migrates the fresh database), the others side by side: one after another costs
        # the wait for /readyz each time.
        replicas = {NAMES[0]: stack.enter_context(run_gatehouse(env, workdir=workdir, timeout=120))}
        starting = {name: run_gatehouse(env, workdir=workdir, timeout=120) for name in NAMES[1:]}
        with ThreadPoolExecutor(len(starting)) as pool:
            started = {name: pool.submit(manager.__enter__) for name, manager in starting.items()}
        for name, future in started.items():
            if future.exception() is None:
                stack.push(starting[name].__exit__)  # stopped at the end, whatever happens to the others
        replicas.update({name: future.result() for name, future in started.items()})
        proxy_url = stack.enter_context(haproxy(workdir, replicas))
        setup = Setup(proxy_url, replicas, upstream, Account(0, ""), redis)
        with setup.admin() as admin:
            setup.account = new_account(admin, "replica-kill")
        try:
            yield setup
        finally:
            setup.redis.stop()


def test_a_replica_killed_under_load_costs_only_its_own_requests(setup: Setup) -> None:
    victim = setup.replicas[VICTIM]
    with traffic(setup.proxy_url, setup.account.key, workers=9, max_tokens=MAX_TOKENS) as load:
        load.wait_for(lambda answers: {a.via for a in answers if a.ok} >= set(NAMES), "every replica answering")
        # Each replica holds a few requests now (leastconn spreads nine clients): kill one under them.
        setup.upstream.wait_for_stats(lambda stats: stats["in_flight"] >= 6, timeout=10)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        killed_at = time.monotonic()  # gone: its listening socket with it
        load.wait_for(
            lambda answers: sum(1 for a in answers if a.started > killed_at + 1 and a.ok) >= 30,
            "requests answered after the kill",
        )
    answers = list(load.answers)
    failed = [a for a in answers if not a.ok]
    after = [a for a in answers if a.started >= killed_at]
    print("all:", len(answers), summary(answers), "by replica:", summary_by_replica(answers))
    print("failed:", [(a.surface, a.status, a.code, a.via) for a in failed])
    # Only requests in flight on the killed replica fail; everything started after the kill succeeds.
    assert failed, "no request was on the killed replica: the kill proved nothing"
    for answer in failed:
        assert answer.started < killed_at < answer.ended + 0.5, answer
        assert answer.via in (VICTIM, None), answer
    assert all(a.ok for a in after), summary(after)
    assert all(a.ok for a in answers if a.via not in (VICTIM, None)), "other replicas' clients were affected"

    with setup.admin() as proxy:
        # The killed replica's reservations are recovered by the others, within four heartbeats and a margin.
        recovered = wait_until(
            lambda: usage_of(proxy, setup.account.user_id)["reserved_tokens"] == 0,
            "the killed replica's reservations recovered",
            4 * HEARTBEAT_SECONDS + 15,
        )
        settled_tokens = sum(a.tokens or 0 for a in answers if a.ok)
        # The request log is written in batches (DESIGN.md): the killed replica's last REQUEST_LOG_FLUSH_SECONDS of
        # rows die with it; the others' rows are all there.
        survivors_ok = sum(1 for a in answers if a.ok and a.via != VICTIM)
        wait_until(
            lambda: _successes_logged(proxy, setup.account.user_id) >= survivors_ok,
            "the surviving replicas' request log flushed",
            15,
        )
        logged = logged_of(proxy, setup.account.user_id)
        usage = usage_of(proxy, setup.account.user_id)
        ledger = setup.upstream.ledger()["fake-chat"]
        cut_short_tokens = ledger["cut_short_prompt_tokens"] + ledger["cut_short_completion_tokens"]
        figures = {
            "requests": len(answers),
            "failed": len(failed),
            "recovered_after_s": round(time.monotonic() - killed_at, 2),
            "waited_for_recovery_s": round(recovered, 2),
            "usage_tokens": usage["tokens"],
            "tokens_of_complete_answers": settled_tokens,
            "request_log_rows": logged["requests"],
            "request_log_rows_lost_with_the_replica": sum(a.ok for a in answers)
            - _successes_logged(proxy, setup.account.user_id),
            "ledger": ledger,
        }
        print("figures:", figures)
        # Every complete answer is one the upstream finished; a killed request may have finished upstream too
        # (the replica died before relaying its end): those are charged in full by recovery, like the upstream.
        finished_tokens = ledger["finished_prompt_tokens"] + ledger["finished_completion_tokens"]
        assert sum(a.ok for a in answers) <= ledger["finished"] <= sum(a.ok for a in answers) + len(failed), figures
        assert settled_tokens <= finished_tokens, figures
        # What the upstream served, to the token for complete answers, and within the documented checkpoint bound
        # for each killed one.
        served = finished_tokens + cut_short_tokens
        assert abs(usage["tokens"] - served) <= len(failed) * PER_REQUEST_BOUND, figures
        assert ledger["answers"] <= usage["messages"] <= ledger["answers"] + len(failed), figures

        # Quotas exact afterwards: one more request is charged exactly what it used.
        before = usage["tokens"]

        async def one() -> Answer:
            headers = {"authorization": f"Bearer {setup.account.key}"}
            async with httpx.AsyncClient(base_url=setup.proxy_url, headers=headers, timeout=30) as http:
                return await one_request(http, "openai", MAX_TOKENS)

        extra = asyncio.run(one())
        assert extra.ok, extra
        wait_until(
            lambda: usage_of(proxy, setup.account.user_id)["tokens"] == before + (extra.tokens or 0), "exact", 10
        )
        check_audit_chain(proxy)


def _successes_logged(admin: httpx.Client, user_id: int) -> int:
    logged = logged_of(admin, user_id)
    return int(logged["requests"] - logged["errors"])


def summary_by_replica(answers: list[Answer]) -> dict[str, dict[str, int]]:
    """summary() per replica that answered."""
    by: dict[str, list[Answer]] = {}
    for answer in answers:
        by.setdefault(answer.via or "-", []).append(answer)
    return {name: summary(group) for name, group in sorted(by.items())}


def test_redis_lost_under_load_loses_nothing(setup: Setup) -> None:
    with setup.admin() as admin:
        account = new_account(admin, "redis-loss")
    ledger_before = setup.upstream.ledger().get("fake-chat", {})
    with traffic(setup.proxy_url, account.key, workers=9, max_tokens=MAX_TOKENS) as load:
        load.wait_for(lambda answers: sum(a.ok for a in answers) >= 10, "traffic flowing")
        setup.upstream.wait_for_stats(lambda stats: stats["in_flight"] >= 4, timeout=10)
        stopped_at = time.monotonic()
        setup.redis.stop()
        load.wait_for(
            lambda answers: sum(1 for a in answers if a.started >= stopped_at and a.ok) >= 20,
            "requests answered without Redis",
        )
        setup.redis = start_throwaway_redis(setup.redis.port)
        restarted_at = time.monotonic()
        load.wait_for(lambda answers: sum(a.ok for a in answers if a.started > restarted_at) >= 20, "after Redis")
    answers = list(load.answers)
    during = [a for a in answers if a.ended >= stopped_at and a.started < restarted_at]
    print("redis loss:", {"requests_during_outage": len(during), "outage_s": round(restarted_at - stopped_at, 2)})
    print("all:", len(answers), summary(answers), "by replica:", summary_by_replica(answers))
    assert during, "no request crossed the outage"
    assert all(a.ok for a in answers), summary([a for a in answers if not a.ok])
    with setup.admin() as admin:
        check_nothing_lost(admin, account, answers, setup.upstream, ledger_before)
        check_audit_chain(admin)
