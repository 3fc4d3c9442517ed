"""Budgets hold under real concurrency: 200 concurrent streams against a group's spend limit, a key's monthly token
quota and a user's monthly message quota, on one SQLite process and on three replicas on PostgreSQL + Redis. The
cost recorded and the cost the fake upstream's own ledger implies both stay within the limit; every hold is
released."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.limits.test_quotas import MESSAGES, Cluster, _start
from tests.support.fake_upstream import FakeUpstream

CONCURRENCY = 200
# Per million tokens: 1,000 for the prompt, 2,000 for the completion (so a request of about 30 prompt tokens and
# 8 completion tokens costs about 0.046).
INPUT, OUTPUT = 1000, 2000


@pytest.fixture(
    scope="module", params=["sqlite-1", pytest.param("postgres-3", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def cluster(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    backend, replicas = str(request.param).split("-")
    yield from _start(tmp_path_factory.mktemp(f"budgets-{request.param}"), fake_upstream, backend, int(replicas))


@pytest.fixture(autouse=True)
def no_per_minute_limit(cluster: Cluster) -> None:
    with cluster.admin.client() as admin:
        assert admin.put("/admin/rate-limits", json={"limits": {"user_per_minute": None}}).status_code == 200


def _member(admin: httpx.Client, group_id: int | None = None) -> tuple[int, str, int]:
    user = admin.post("/admin/users", json={"email": f"b-{time.time_ns()}@example.com"}).json()
    if group_id is not None:
        assert admin.put(f"/admin/groups/{group_id}/members/{user['id']}").status_code == 200
    key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()
    return user["id"], key["key"], key["id"]


async def _stream(client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]) -> tuple[int, str | None]:
    headers = {"authorization": f"Bearer {key}"}
    async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
        raw = await response.aread()
    if response.status_code == 200:
        assert raw.rstrip().endswith(b"data: [DONE]"), raw[-200:]
        return 200, None
    return response.status_code, httpx.Response(response.status_code, content=raw).json()["error"]["code"]


def _burst(cluster: Cluster, keys: list[str], body: dict[str, Any]) -> Counter[tuple[int, str | None]]:
    """CONCURRENCY streams at once, spread over the keys and the replicas."""

    async def run() -> Counter[tuple[int, str | None]]:
        urls = itertools.cycle([s.url for s in cluster.servers])
        users = itertools.cycle(keys)
        limits = httpx.Limits(max_connections=CONCURRENCY + 10, max_keepalive_connections=CONCURRENCY + 10)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            results = await asyncio.gather(
                *(_stream(client, next(urls), next(users), body) for _ in range(CONCURRENCY))
            )
        return Counter(results)

    return asyncio.run(run())


def _served(fake: FakeUpstream, before: dict[str, int]) -> tuple[int, int, int]:
    after = fake.stats()
    return (
        after["chat_requests"] - before["chat_requests"],
        after["prompt_tokens"] - before["prompt_tokens"],
        after["completion_tokens_served"] - before["completion_tokens_served"],
    )


def _budget(admin: httpx.Client, scope: str, subject_id: int, period: str, timeout: float = 5.0) -> dict[str, Any]:
    """A budget's state once nothing is held any more (every request settled)."""
    deadline = time.monotonic() + timeout
    while True:
        states = admin.get(f"/admin/{scope}s/{subject_id}/budgets").json()
        (state,) = [s for s in states if s["period"] == period and s["scope"] == scope]
        if (state["tokens"]["held"] == 0 and state["spend"]["held"] == 0) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_group_spend_limit_holds_across_members_and_replicas(cluster: Cluster, fake_upstream: FakeUpstream) -> None:
    limit = 1  # about 20 requests' worth
    with cluster.admin.client() as admin:
        price = {"input": INPUT, "output": OUTPUT, "cached_input": INPUT}
        assert admin.put("/admin/prices/oa-chat", json=price).status_code in (200, 201)
        group_id = admin.post("/admin/groups", json={"name": f"research-{time.time_ns()}"}).json()["id"]
        keys = [_member(admin, group_id)[1] for _ in range(4)]
        response = admin.patch(f"/admin/groups/{group_id}/limits", json={"spend_per_month": limit})
        assert response.status_code == 200, response.text
    time.sleep(0.5)  # the new budget reaches every replica's registry (within a second)
    before = fake_upstream.stats()
    body = {"model": "oa-chat", "messages": MESSAGES, "stream": True, "max_tokens": 8}
    results = _burst(cluster, keys, body)

    admitted = results[(200, None)]
    assert set(results) <= {(200, None), (429, "quota_exceeded"), (429, "quota_busy")}, results
    assert 10 <= admitted < CONCURRENCY, results
    requests, prompt, completion = _served(fake_upstream, before)
    assert requests == admitted
    implied = (prompt * INPUT + completion * OUTPUT) / 1e6  # the fake upstream's ledger at the price
    assert implied <= limit, f"the upstream served {implied} worth, over the limit of {limit}"
    with cluster.admin.client() as admin:
        state = _budget(admin, "group", group_id, "month")
    assert state["spend"]["held"] == 0 and state["tokens"]["held"] == 0, "every reservation was settled"
    assert state["spend"]["used"] <= limit
    # Recorded per request, rounded up to a billionth each: at most one billionth per request above the ledger.
    implied_nanos, used_nanos = (prompt * INPUT + completion * OUTPUT) * 1000, round(state["spend"]["used"] * 1e9)
    assert implied_nanos <= used_nanos <= implied_nanos + admitted
    assert state["messages"]["used"] == admitted


def test_key_monthly_token_quota_holds(cluster: Cluster, fake_upstream: FakeUpstream) -> None:
    budget = 800
    with cluster.admin.client() as admin:
        _, key, key_id = _member(admin)
        assert admin.patch(f"/admin/keys/{key_id}/limits", json={"tokens_per_month": budget}).status_code == 200
    time.sleep(0.5)
    before = fake_upstream.stats()
    results = _burst(cluster, [key], {"model": "ol-chat", "messages": MESSAGES, "stream": True, "max_tokens": 8})
    admitted = results[(200, None)]
    assert set(results) <= {(200, None), (429, "quota_exceeded"), (429, "quota_busy")}, results
    assert 5 <= admitted < CONCURRENCY, results
    requests, prompt, completion = _served(fake_upstream, before)
    assert requests == admitted and prompt + completion <= budget
    with cluster.admin.client() as admin:
        state = _budget(admin, "key", key_id, "month")
    assert state["tokens"]["held"] == 0
    assert state["tokens"]["used"] == prompt + completion <= budget


def test_user_monthly_message_quota_is_exact(cluster: Cluster, fake_upstream: FakeUpstream) -> None:
    with cluster.admin.client() as admin:
        user_id, key, _ = _member(admin)
        assert admin.patch(f"/admin/users/{user_id}/limits", json={"messages_per_month": 10}).status_code == 200
    time.sleep(0.5)
    before = fake_upstream.stats()
    results = _burst(cluster, [key], {"model": "oa-chat", "messages": MESSAGES, "stream": True})
    assert results == Counter({(200, None): 10, (429, "quota_exceeded"): CONCURRENCY - 10}), results
    assert _served(fake_upstream, before)[0] == 10
    with cluster.admin.client() as admin:
        state = _budget(admin, "user", user_id, "month")
        refused = admin.get(f"/admin/users/{user_id}/budgets").json()
    assert state["messages"] == {"used": 10, "held": 0, "limit": 10, "percent": 100.0}
    assert {s["period"] for s in refused} == {"day", "month"}
    with cluster.servers[-1].client(key) as client:
        response = client.post("/v1/chat/completions", json={"model": "oa-chat", "messages": MESSAGES})
    error = response.json()["error"]
    assert response.status_code == 429 and error["param"] == "messages_per_month"
    assert "Your month's message quota is reached: 10 messages of 10 messages used" in error["message"]
