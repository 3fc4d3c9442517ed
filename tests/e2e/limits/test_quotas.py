"""Quotas and rate limits stay exact under real concurrency: one SQLite process, and three replicas on
PostgreSQL + Redis serving the same user."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.services import flush_redis_prefix, redis_server, unique_redis_prefix

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story"}]
CONCURRENCY = 200


@dataclass
class Cluster:
    """One or more Gatehouse replicas sharing a database (and Redis when there are several)."""

    servers: list[GatehouseServer]

    @property
    def admin(self) -> GatehouseServer:
        return self.servers[0]


def _start(tmp: Path, fake: FakeUpstream, backend: str, replicas: int) -> Iterator[Cluster]:
    with fresh_database(backend, tmp) as database_url:
        config = write_config(tmp / "gatehouse.yaml", fake.url)
        extra: dict[str, str] = {
            "GATEHOUSE_CONFIG": str(config),
            "REQUEST_LOG_FLUSH_SECONDS": "0.2",
            "UPSTREAM_READ_TIMEOUT": "5",
        }
        prefix = None
        if replicas > 1:
            prefix = unique_redis_prefix()
            extra.update(REDIS_URL=redis_server(), REDIS_PREFIX=prefix)
        env = base_env(database_url, tmp / "data", **extra)
        servers: list[GatehouseServer] = []
        contexts = [run_gatehouse(env, workdir=tmp) for _ in range(replicas)]
        try:
            for context in contexts:
                servers.append(context.__enter__())
            yield Cluster(servers)
        finally:
            for context in reversed(contexts[: len(servers)]):
                context.__exit__(None, None, None)
            if prefix:
                flush_redis_prefix(redis_server(), prefix)


@pytest.fixture(
    scope="module", params=["sqlite-1", pytest.param("postgres-3", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def cluster(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """SQLite with one process, or PostgreSQL + Redis with three processes."""
    backend, replicas = str(request.param).split("-")
    yield from _start(tmp_path_factory.mktemp(f"quota-{request.param}"), fake_upstream, backend, int(replicas))


def _admin(cluster: Cluster) -> httpx.Client:
    return cluster.admin.client()


def new_user(cluster: Cluster, **quotas: int | None) -> tuple[int, str]:
    """A fresh user with the given quotas and a key."""
    with _admin(cluster) as admin:
        user = admin.post("/admin/users", json={"email": f"q-{time.time_ns()}@example.com"}).json()
        assert admin.patch(f"/admin/users/{user['id']}", json=quotas).status_code == 200
        key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()["key"]
    return user["id"], key


def usage_of(cluster: Cluster, user_id: int) -> dict[str, Any]:
    with _admin(cluster) as admin:
        rows = admin.get("/admin/usage", params={"user_id": user_id}).json()
    return rows[0] if rows else {"messages": 0, "tokens": 0, "reserved_tokens": 0}


def set_limits(server: GatehouseServer, limits: dict[str, int | None]) -> None:
    with server.client() as admin:
        response = admin.put("/admin/rate-limits", json={"limits": limits})
        assert response.status_code == 200, response.text


@pytest.fixture(autouse=True)
def no_per_minute_limit(cluster: Cluster) -> None:
    """These tests send hundreds of requests a minute; the per-minute limit is tested on its own."""
    set_limits(cluster.admin, {"user_per_minute": None})


async def _stream_once(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int, str | None]:
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        raw = await response.aread()
    if response.status_code == 200:
        assert raw.rstrip().endswith(b"data: [DONE]"), raw[-200:]
        return 200, None
    return response.status_code, httpx.Response(response.status_code, content=raw).json()["error"]["code"]


async def _burst(cluster: Cluster, key: str, body: dict[str, Any], count: int) -> Counter[tuple[int, str | None]]:
    urls = itertools.cycle([s.url for s in cluster.servers])
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=60, limits=limits) as client:
        results = await asyncio.gather(*(_stream_once(client, next(urls), body) for _ in range(count)))
    return Counter(results)


def _served(fake: FakeUpstream, before: dict[str, int]) -> tuple[int, int, int]:
    after = fake.stats()
    return (
        after["chat_requests"] - before["chat_requests"],
        after["prompt_tokens"] - before["prompt_tokens"],
        after["completion_tokens_served"] - before["completion_tokens_served"],
    )


def test_token_quota_holds_under_concurrent_streams(cluster: Cluster, fake_upstream: FakeUpstream) -> None:
    budget = 800  # each request reserves about 80 (its prompt bound plus max_tokens 8): ten fit at once
    user_id, key = new_user(cluster, tokens_per_day=budget)
    before = fake_upstream.stats()
    body = {"model": "oa-chat", "messages": MESSAGES, "stream": True, "max_tokens": 8}
    results = asyncio.run(_burst(cluster, key, body, CONCURRENCY))
    admitted = results[(200, None)]
    assert set(results) <= {(200, None), (429, "quota_exceeded")}, results
    assert 10 <= admitted < CONCURRENCY, results
    requests, prompt, completion = _served(fake_upstream, before)
    assert requests == admitted
    assert prompt + completion <= budget, "the upstream served more than the quota"
    usage = usage_of(cluster, user_id)
    assert usage["reserved_tokens"] == 0, "every reservation was settled"
    assert usage["tokens"] == prompt + completion, "recorded usage is what the upstream reported"
    assert usage["tokens"] <= budget
    assert usage["messages"] == admitted


def test_message_quota_holds_under_concurrent_streams(cluster: Cluster, fake_upstream: FakeUpstream) -> None:
    user_id, key = new_user(cluster, messages_per_day=10)
    before = fake_upstream.stats()
    body = {"model": "ol-chat", "messages": MESSAGES, "stream": True}
    results = asyncio.run(_burst(cluster, key, body, CONCURRENCY))
    assert results == Counter({(200, None): 10, (429, "quota_exceeded"): CONCURRENCY - 10})
    assert _served(fake_upstream, before)[0] == 10
    assert usage_of(cluster, user_id)["messages"] == 10


def test_refusal_says_which_quota_and_when_it_resets(cluster: Cluster) -> None:
    _, key = new_user(cluster, messages_per_day=0)
    with cluster.servers[-1].client(key) as client:
        response = client.post("/v1/chat/completions", json={"model": "oa-chat", "messages": MESSAGES})
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded" and error["param"] == "messages"
    assert "0 of 0 messages" in error["message"] and "resets at" in error["message"]
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["x-ratelimit-limit"] == "0" and response.headers["x-ratelimit-remaining"] == "0"


def _settled(cluster: Cluster, user_id: int, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        usage = usage_of(cluster, user_id)
        if usage["reserved_tokens"] == 0 or time.monotonic() > deadline:
            return usage
        time.sleep(0.05)


def test_client_disconnect_settles(cluster: Cluster) -> None:
    user_id, key = new_user(cluster, tokens_per_day=100_000)
    body = {"model": "oa-long", "messages": MESSAGES, "stream": True}
    with cluster.servers[-1].client(key) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        for _ in range(10):
            next(lines)
    usage = _settled(cluster, user_id)
    assert usage["reserved_tokens"] == 0
    assert 0 < usage["tokens"] < 1000, "what was served (estimated: no usage arrived) replaces the reservation"
    assert usage["messages"] == 1


def test_upstream_failure_mid_stream_settles(cluster: Cluster) -> None:
    user_id, key = new_user(cluster, tokens_per_day=100_000)
    with cluster.servers[-1].client(key) as client:
        response = client.post("/api/chat", json={"model": "ol-midfail", "messages": MESSAGES})
    assert '"error"' in response.text.splitlines()[-1]
    usage = _settled(cluster, user_id)
    assert usage["reserved_tokens"] == 0
    assert usage["tokens"] > 0 and usage["messages"] == 1


def test_upstream_failure_before_any_byte_refunds_the_message(cluster: Cluster) -> None:
    user_id, key = new_user(cluster, messages_per_day=5, tokens_per_day=100_000)
    with cluster.servers[-1].client(key) as client:
        assert client.post("/v1/chat/completions", json={"model": "oa-error", "messages": MESSAGES}).status_code == 502
    usage = _settled(cluster, user_id)
    assert (usage["messages"], usage["tokens"], usage["reserved_tokens"]) == (0, 0, 0)


def test_upstream_without_usage_is_estimated_within_the_grant(cluster: Cluster, fake_upstream: FakeUpstream) -> None:
    user_id, key = new_user(cluster, tokens_per_day=100_000)
    with cluster.servers[-1].client(key) as client:
        for path, model in (("/v1/chat/completions", "oa-nousage"), ("/api/chat", "ol-nousage")):
            assert client.post(path, json={"model": model, "messages": MESSAGES, "stream": True}).status_code == 200
    usage = _settled(cluster, user_id)
    assert usage["reserved_tokens"] == 0
    # Two requests of 8 completion tokens each plus their prompts; the estimate is close, never above the grant.
    assert 16 <= usage["tokens"] <= 2 * (8 + 60)


def test_max_tokens_is_lowered_to_what_remains(cluster: Cluster, fake_upstream: FakeUpstream) -> None:
    _, key = new_user(cluster, tokens_per_day=70)
    fake_upstream.reset()
    with cluster.servers[-1].client(key) as client:
        response = client.post("/v1/chat/completions", json={"model": "oa-chat", "messages": MESSAGES})
    assert response.status_code == 200, response.text
    sent = fake_upstream.requests()[-1]["body"]
    assert 1 <= sent["max_tokens"] < 70


# --- rate limits across replicas ------------------------------------------------------------------


def test_per_minute_limit_is_exact_across_replicas(cluster: Cluster) -> None:
    _, key = new_user(cluster)
    set_limits(cluster.servers[-1], {"user_per_minute": 25})
    try:
        body = {"model": "oa-chat", "messages": MESSAGES, "stream": True}
        results = asyncio.run(_burst(cluster, key, body, 90))
    finally:
        set_limits(cluster.admin, {"user_per_minute": None})
    assert results == Counter({(200, None): 25, (429, "rate_limited"): 65})


def test_rate_limit_change_reaches_every_replica_within_a_second(cluster: Cluster) -> None:
    a, b = cluster.servers[0], cluster.servers[-1]
    _, key = new_user(cluster)
    set_limits(a, {"chat": 2})
    started = time.perf_counter()
    try:
        with b.client() as admin_b:
            while True:
                rules = {r["name"]: r["limit"] for r in admin_b.get("/admin/rate-limits").json()}
                if rules["chat"] == 2:
                    break
                assert time.perf_counter() - started < 1.0, "the change did not reach the other replica"
                time.sleep(0.01)
        with b.client(key) as client:
            statuses = [
                client.post("/v1/chat/completions", json={"model": "oa-chat", "messages": MESSAGES}).status_code
                for _ in range(3)
            ]
        assert statuses == [200, 200, 429]
    finally:
        with a.client() as admin:
            admin.put("/admin/rate-limits", json={"reset": ["chat"]})


def test_rate_limited_refusal_headers(cluster: Cluster) -> None:
    _, key = new_user(cluster)
    set_limits(cluster.admin, {"embeddings": 1})
    try:
        with cluster.servers[-1].client(key) as client:
            assert client.post("/v1/embeddings", json={"model": "oa-embed", "input": "x"}).status_code == 200
            refused = client.post("/v1/embeddings", json={"model": "oa-embed", "input": "x"})
            ollama_refused = client.post("/api/embed", json={"model": "ol-embed", "input": "x"})
    finally:
        with cluster.admin.client() as admin:
            admin.put("/admin/rate-limits", json={"reset": ["embeddings"]})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited" and refused.json()["error"]["param"] == "embeddings"
    assert refused.headers["x-ratelimit-limit"] == "1" and refused.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert ollama_refused.status_code == 429 and isinstance(ollama_refused.json()["error"], str)
