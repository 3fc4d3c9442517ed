"""A Redis outage is degraded service, not an outage: three Gatehouse replicas on PostgreSQL share a Redis of the
test's own, under concurrent load; the test stops Redis, and later starts it again on the same port.

While it is down: no 5xx (the default `local` policy answers 200 or 429), rate limits hold each replica to its
share, /readyz stays 200 while /admin/health says degraded and the metric says 0, a key revoked on one replica
is refused by the others within the auth cache's outage life, a stream elsewhere cannot be terminated (503).
Once it is back: a key revoked just before is refused everywhere within seconds, and the live feed tells of both
switches. The figures (latencies, 5xx, catch-up times) are printed; `pytest -s` shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from gatehouse.auth.cache import OUTAGE_TTL_SECONDS
from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.services import ThrowawayServer, start_throwaway_redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
REPLICAS = 3
LIMIT = 30  # RATE_LIMIT_PER_MINUTE: while Redis is down each replica admits ceil(30 / 3) = 10 per user
LOAD_USERS = 24
LOAD_PAUSE = 0.5  # seconds between one load user's requests: well under its share of the limit
OUTAGE_SECONDS = 10.0
CHAT = {"model": "oa-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@dataclass
class Cluster:
    servers: list[GatehouseServer]
    redis: ThrowawayServer

    @property
    def admin(self) -> GatehouseServer:
        return self.servers[0]


@pytest.fixture(scope="module")
def cluster(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("redis-outage")
    cluster = Cluster([], start_throwaway_redis())  # the test's own Redis: it is stopped below, never the shared one
    try:
        with fresh_database("postgres", tmp) as database_url, contextlib.ExitStack() as stack:
            env = base_env(
                database_url,
                tmp / "data",
                GATEHOUSE_CONFIG=str(write_config(tmp / "gatehouse.yaml", fake_upstream.url)),
                REDIS_URL=cluster.redis.url,
                REDIS_PREFIX="gatehouse-outage:",
                RATE_LIMIT_PER_MINUTE=str(LIMIT),
                UPSTREAM_READ_TIMEOUT="30",
                REQUEST_LOG_FLUSH_SECONDS="0.2",
            )
            cluster.servers = [stack.enter_context(run_gatehouse(env, workdir=tmp)) for _ in range(REPLICAS)]
            yield cluster
    finally:
        cluster.redis.stop()


@dataclass
class Answer:
    started: float  # perf_counter
    seconds: float
    status: int
    code: str | None
    replica: int


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def during(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.started < end]


async def _ask(client: httpx.AsyncClient, cluster: Cluster, replica: int, key: str, load: Load) -> Answer:
    started = time.perf_counter()
    response = await client.post(
        cluster.servers[replica].url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
    )
    code = response.json().get("error", {}).get("code") if response.status_code != 200 else None
    answer = Answer(started, time.perf_counter() - started, response.status_code, code, replica)
    load.answers.append(answer)
    return answer


async def _steady(client: httpx.AsyncClient, cluster: Cluster, key: str, first: int, load: Load) -> None:
    """One user's steady trickle, round robin over the replicas."""
    for replica in itertools.cycle([(first + n) % REPLICAS for n in range(REPLICAS)]):
        if load.stop.is_set():
            return
        await _ask(client, cluster, replica, key, load)
        await asyncio.sleep(LOAD_PAUSE)


async def _hammer(client: httpx.AsyncClient, cluster: Cluster, key: str, until: asyncio.Event) -> list[Answer]:
    """One user as fast as it can, round robin over the replicas, until `until` is set."""
    mine = Load()
    for replica in itertools.cycle(range(REPLICAS)):
        if until.is_set():
            return mine.answers
        await _ask(client, cluster, replica, key, mine)
    return mine.answers


@contextlib.asynccontextmanager
async def _following(
    client: httpx.AsyncClient, server: GatehouseServer, seen: list[dict[str, object]]
) -> AsyncIterator[None]:
    """Follow server's live feed for redis.* events in the background."""

    async def follow() -> None:
        headers = {"authorization": f"Bearer {server.admin_key}"}
        url = server.url + "/admin/events"
        async with client.stream("GET", url, params={"kinds": "redis."}, headers=headers, timeout=None) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(orjson.loads(line[6:]))

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


async def _refused_everywhere(client: httpx.AsyncClient, cluster: Cluster, key: str, limit: float) -> float:
    """When (perf_counter) every replica answers 401 to `key` (polling GET /v1/models), within `limit` seconds."""
    pending = set(range(REPLICAS))
    async with asyncio.timeout(limit):
        while pending:
            for replica in list(pending):
                response = await client.get(
                    cluster.servers[replica].url + "/v1/models", headers={"authorization": f"Bearer {key}"}
                )
                if response.status_code == 401:
                    pending.discard(replica)
            await asyncio.sleep(0.05)
    return time.perf_counter()


def _new_key(admin: httpx.Client, name: str) -> tuple[int, str]:
    user = admin.post("/admin/users", json={"email": f"{name}-{time.time_ns()}@example.com"}).json()
    key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": name}).json()
    return key["id"], key["key"]


def _health(server: GatehouseServer) -> dict[str, object]:
    with server.client() as admin:
        body: dict[str, object] = admin.get("/admin/health").json()
        return body


def _redis_up_metric(server: GatehouseServer) -> float:
    with server.client() as admin:
        for line in admin.get("/metrics").text.splitlines():
            if line.startswith("gatehouse_redis_up "):
                return float(line.split()[1])
    raise AssertionError("gatehouse_redis_up is not exported")


async def _scenario(cluster: Cluster, figures: dict[str, object]) -> tuple[Load, list[Answer], list[dict[str, object]]]:
    with cluster.admin.client() as admin:
        load_keys = [_new_key(admin, f"load{n}")[1] for n in range(LOAD_USERS)]
        _, hammered = _new_key(admin, "hammer")
        early_id, early = _new_key(admin, "revoked-early")
        late_id, late = _new_key(admin, "revoked-late")
    load, seen = Load(), []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for key in [*load_keys, early, late]:  # every key cached on every replica
            for replica in range(REPLICAS):
                assert (await _ask(client, cluster, replica, key, Load())).status == 200
        async with _following(client, cluster.admin, seen):
            trickle = [asyncio.create_task(_steady(client, cluster, k, n, load)) for n, k in enumerate(load_keys)]
            await asyncio.sleep(2)

            # --- Redis goes away ------------------------------------------------------------------------------
            stopped = time.perf_counter()
            cluster.redis.stop()
            outage_over = asyncio.Event()
            hammer = asyncio.create_task(_hammer(client, cluster, hammered, outage_over))
            await asyncio.sleep(2)
            for server in cluster.servers:
                assert (await client.get(server.url + "/readyz")).status_code == 200
                health = await asyncio.to_thread(_health, server)
                redis = health["redis"]
                assert isinstance(redis, dict)
                assert (health["status"], redis["state"], redis["rate_limits"]) == ("degraded", "down", "local"), health
                assert redis["rate_limit_replicas"] == REPLICAS
                assert await asyncio.to_thread(_redis_up_metric, server) == 0

            # A stream held by replica B: replica A cannot see it now (503, not 404); B itself ends it.
            b = cluster.servers[1]
            hanging = asyncio.create_task(
                client.post(
                    b.url + "/v1/chat/completions",
                    json={**CHAT, "model": "oa-hang", "stream": True},
                    headers={"authorization": f"Bearer {load_keys[0]}"},
                )
            )
            with b.client() as on_b, cluster.admin.client() as on_a:
                for _ in range(100):
                    if items := on_b.get("/admin/streams").json()["items"]:
                        break
                    await asyncio.sleep(0.05)
                stream_id = items[0]["id"]
                from_a = on_a.post(f"/admin/streams/{stream_id}/terminate", json={"reason": "outage drill"})
                assert from_a.status_code == 503 and from_a.json()["error"]["code"] == "streams_unavailable"
                from_b = on_b.post(f"/admin/streams/{stream_id}/terminate", json={"reason": "outage drill"})
                assert from_b.status_code == 200 and from_b.json()["status"] == "terminated"
            assert (await hanging).status_code < 500

            # A key revoked on A while Redis is down: B and C stop accepting it within the cache's outage life.
            for replica in range(REPLICAS):  # cached afresh, during the outage, on every replica
                assert (await _ask(client, cluster, replica, early, Load())).status == 200
            with cluster.admin.client() as on_a:
                assert on_a.delete(f"/admin/keys/{early_id}").status_code == 200
            revoked = time.perf_counter()
            refused = await _refused_everywhere(client, cluster, early, OUTAGE_TTL_SECONDS + 3)
            figures["revoked_during_outage_refused_everywhere_after_s"] = round(refused - revoked, 2)

            await asyncio.sleep(max(0.0, stopped + OUTAGE_SECONDS - time.perf_counter()))
            # --- a key revoked at the very end of the outage, then Redis comes back on the same port --------
            for replica in range(REPLICAS):  # cached afresh on every replica, just before
                assert (await _ask(client, cluster, replica, late, Load())).status == 200
            with cluster.admin.client() as on_a:
                assert on_a.delete(f"/admin/keys/{late_id}").status_code == 200
            revoked = time.perf_counter()
            cluster.redis = await asyncio.to_thread(start_throwaway_redis, cluster.redis.port)
            restarted = time.perf_counter()  # Redis answers PING again
            outage_over.set()
            refused = await _refused_everywhere(client, cluster, late, OUTAGE_TTL_SECONDS + 5)
            figures["revoked_just_before_return_refused_everywhere_after_return_s"] = round(refused - restarted, 2)
            figures["revoked_just_before_return_refused_everywhere_after_revoke_s"] = round(refused - revoked, 2)

            async def all_up() -> bool:
                states = [(await asyncio.to_thread(_health, s))["redis"] for s in cluster.servers]
                return all(isinstance(r, dict) and r["state"] == "up" for r in states)

            async with asyncio.timeout(15):
                while not await all_up():
                    await asyncio.sleep(0.2)
            figures["all_replicas_up_after_return_s"] = round(time.perf_counter() - restarted, 2)
            await asyncio.sleep(2)
            load.stop.set()
            await asyncio.gather(*trickle)
            hammered_answers = await hammer
            async with asyncio.timeout(15):
                while sum(e["kind"] == "redis.restored" for e in seen) < REPLICAS:
                    await asyncio.sleep(0.1)
    figures["outage"] = (stopped, restarted)
    return load, hammered_answers, seen


def test_three_replicas_ride_out_a_redis_outage(cluster: Cluster) -> None:
    figures: dict[str, object] = {}
    load, hammered, seen = asyncio.run(_scenario(cluster, figures))
    stopped, restarted = figures.pop("outage")  # type: ignore[misc]  # (perf_counter, perf_counter)
    everything = load.answers + hammered
    statuses = Counter((a.status, a.code) for a in everything)
    server_errors = {k: v for k, v in statuses.items() if k[0] >= 500}
    during = [a for a in everything if stopped <= a.started < restarted]
    first_two = [a for a in during if a.started < stopped + 2]
    figures.update(
        requests=len(everything),
        requests_during_outage=len(during),
        statuses={f"{s} {c or ''}".strip(): n for (s, c), n in statuses.items()},
        server_errors=sum(server_errors.values()),
        max_latency_during_outage_s=round(max(a.seconds for a in during), 3),
        max_latency_first_2s_of_outage_s=round(max(a.seconds for a in first_two), 3),
        p50_latency_during_outage_ms=round(statistics.median(a.seconds for a in during) * 1000, 1),
        max_latency_before_outage_s=round(max(a.seconds for a in everything if a.started < stopped), 3),
    )
    admitted = Counter(a.replica for a in hammered if a.status == 200 and stopped <= a.started < restarted)
    figures["hammered_user_admitted_during_outage"] = dict(sorted(admitted.items()))
    shown = orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    print("\nredis outage figures:", shown)

    assert server_errors == {}, statuses
    assert set(statuses) <= {(200, None), (429, "rate_limited")}, statuses
    # The local policy: each replica admits its share, ceil(30 / 3), so all three together at most the limit.
    assert sum(admitted.values()) <= LIMIT and all(n <= LIMIT // REPLICAS for n in admitted.values()), admitted
    assert set(admitted) == set(range(REPLICAS)), "every replica went on serving"
    assert max(a.seconds for a in during) < 3, "a request waited for Redis"
    kinds = Counter((e["kind"], e["replica"]) for e in seen)
    assert len({r for k, r in kinds if k == "redis.unavailable"}) == REPLICAS, seen
    assert len({r for k, r in kinds if k == "redis.restored"}) == REPLICAS, seen
    for server in cluster.servers:
        log = server.log_text()
        assert "unhandled_error" not in log
        assert "redis_unavailable" in log and "redis_restored" in log and "bus_reconnected" in log
