"""Fair admission: a request that does not fit only because of the user's other requests in progress waits for
them (first come, first served) instead of being refused as if the quota were spent; `quota_exceeded` only when
the quota is really used up, `quota_busy` when the wait runs out. One SQLite process, and three replicas on
PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.services import flush_redis_prefix, redis_server, unique_redis_prefix

TOKENS = 20  # each answer: 20 tokens, plus a prompt of 5 as the upstream counts it ("hi"): about 25 a request
WAIT_SECONDS = 6
HI = [{"role": "user", "content": "hi"}]
PROMPT_BOUND = 16 + 8 + 2  # quotas.prompt_bound of HI: framing per request and message, and its bytes


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """An upstream of its own (its ledger counts only this module): 20 tokens an answer, 5 ms apart."""
    with run_fake_upstream(api_key="upstream-secret-key", token_delay=0.005, tokens=TOKENS) as fake:
        yield fake


@pytest.fixture(
    scope="module", params=["sqlite-1", pytest.param("postgres-3", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def servers(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatehouseServer]]:
    backend, count = str(request.param).split("-")
    workdir = tmp_path_factory.mktemp(f"fair-{request.param}")
    prefix = unique_redis_prefix()
    extra = {"REDIS_URL": redis_server(), "REDIS_PREFIX": prefix} if int(count) > 1 else {}
    with fresh_database(backend, workdir) as database_url, ExitStack() as stack:
        env = base_env(
            database_url,
            workdir / "data",
            GATEHOUSE_CONFIG=str(
                write_config(workdir / "gatehouse.yaml", upstream.url, output_caps={"oa-slow": 30, "oa-hang": 30})
            ),
            QUOTA_WAIT_SECONDS=str(WAIT_SECONDS),
            RATE_LIMIT_PER_MINUTE="100000",
            UPSTREAM_READ_TIMEOUT="30",
            **extra,
        )
        yield [stack.enter_context(run_gatehouse(env, workdir=workdir)) for _ in range(int(count))]
    if extra:
        flush_redis_prefix(redis_server(), prefix)


def _user(server: GatehouseServer, **quotas: int) -> tuple[int, str]:
    with server.client() as admin:
        user = admin.post("/admin/users", json={"email": f"fair-{time.time_ns()}@example.com"}).json()
        assert admin.patch(f"/admin/users/{user['id']}", json=quotas).status_code == 200
        key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "agent"}).json()["key"]
    return user["id"], key


def _usage(server: GatehouseServer, user_id: int) -> dict[str, Any]:
    with server.client() as admin:
        rows = admin.get("/admin/usage", params={"user_id": user_id}).json()
    return dict(rows[0]) if rows else {"tokens": 0, "reserved_tokens": 0}


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int, str]:
    """(status, the finish reason or the error code)."""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        raw = await response.aread()
    if response.status_code != 200:
        return response.status_code, orjson.loads(raw)["error"]["code"]
    reasons = [
        choice.get("finish_reason")
        for line in raw.splitlines()
        if line.startswith(b"data: {")
        for choice in orjson.loads(line[6:])["choices"]
    ]
    return 200, next(reason for reason in reversed(reasons) if reason)


def _burst(servers: list[GatehouseServer], key: str, body: dict[str, Any], count: int) -> Counter[tuple[int, str]]:
    async def run() -> Counter[tuple[int, str]]:
        urls = itertools.cycle([s.url for s in servers])
        limits = httpx.Limits(max_connections=count + 5)
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=60, limits=limits) as client:
            return Counter(await asyncio.gather(*(_stream(client, next(urls), body) for _ in range(count))))

    return asyncio.run(run())


def _served(upstream: FakeUpstream, before: dict[str, int]) -> int:
    after = upstream.stats()
    return sum(after[k] - before[k] for k in ("prompt_tokens", "completion_tokens_served"))


def test_a_small_quota_serves_whole_answers_to_concurrent_streams(
    servers: list[GatehouseServer], upstream: FakeUpstream
) -> None:
    quota = 300
    user_id, key = _user(servers[0], tokens_per_day=quota)
    before = upstream.stats()
    results = _burst(servers, key, {"model": "oa-chat", "messages": HI, "stream": True}, 60)
    served = _served(upstream, before)
    usage = _usage(servers[0], user_id)
    print(f"tokens_per_day={quota}, 60 streams: {dict(results)}; upstream served {served}; recorded {usage['tokens']}")
    assert served <= quota and usage["tokens"] <= quota
    assert results[(200, "stop")] >= 10, "at least ten whole answers, none cut short by a tiny grant"
    assert set(results) <= {(200, "stop"), (200, "length"), (429, "quota_exceeded"), (429, "quota_busy")}
    if results[(429, "quota_exceeded")]:
        assert quota - usage["tokens"] <= PROMPT_BOUND, "refused as used up while more than a prompt's worth remained"
    assert usage["reserved_tokens"] == 0


def test_concurrency_beyond_what_the_allowances_cover_waits_instead_of_failing(
    servers: list[GatehouseServer], upstream: FakeUpstream
) -> None:
    # Each request reserves its prompt plus DEFAULT_COMPLETION_ALLOWANCE (4,096): 24 fit in 100,000 at once.
    user_id, key = _user(servers[0], tokens_per_day=100_000)
    results = _burst(servers, key, {"model": "oa-chat", "messages": HI, "stream": True}, 40)
    assert results == Counter({(200, "stop"): 40}), results
    usage = _usage(servers[0], user_id)
    assert usage["reserved_tokens"] == 0 and usage["tokens"] == 40 * (TOKENS + 5)


def test_a_request_held_back_too_long_is_refused_as_busy_not_exceeded(servers: list[GatehouseServer]) -> None:
    user_id, key = _user(servers[0], tokens_per_day=5_000)
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=60) as client:

        async def hold() -> None:  # holds its grant (prompt + 4,096: ol-hang has no output cap) until cancelled
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=60) as holder:
                await holder.post(servers[0].url + "/v1/chat/completions", json={"model": "ol-hang", "messages": HI})

        async def refused() -> httpx.Response:
            task = asyncio.create_task(hold())
            while _usage(servers[0], user_id)["reserved_tokens"] == 0:
                await asyncio.sleep(0.05)
            started = time.monotonic()
            response = await asyncio.to_thread(
                client.post, servers[-1].url + "/v1/chat/completions", json={"model": "oa-chat", "messages": HI}
            )
            assert time.monotonic() - started >= WAIT_SECONDS - 0.5, "it waited for the other request first"
            task.cancel()
            return response

        response = asyncio.run(refused())
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "quota_busy", error
    assert "held by your requests in progress" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 10


def test_a_models_output_cap_sizes_what_its_requests_reserve(
    servers: list[GatehouseServer], upstream: FakeUpstream
) -> None:
    # oa-slow and oa-hang have max_output_tokens: 30 in the configuration: a request naming no max_tokens reserves
    # its prompt bound plus 30 (56), not plus DEFAULT_COMPLETION_ALLOWANCE, so ten of them hold 560 of 1,000 at
    # once (with the allowance, the first would hold all 1,000 and the others wait).
    user_id, key = _user(servers[0], tokens_per_day=1_000)
    upstream.reset()
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        answer = client.post(servers[-1].url + "/v1/chat/completions", json={"model": "oa-slow", "messages": HI})
    assert answer.status_code == 200, answer.text
    assert upstream.requests()[-1]["body"]["max_tokens"] == 30, "the upstream is asked for at most the model's cap"

    async def hang(client: httpx.AsyncClient, url: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await client.post(url + "/v1/chat/completions", json={"model": "oa-hang", "messages": HI})

    async def held_at_once() -> int:
        urls = itertools.cycle([s.url for s in servers])
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
            tasks = [asyncio.create_task(hang(client, next(urls))) for _ in range(10)]
            deadline = time.monotonic() + 20
            held = 0
            while held < 560 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                held = (await asyncio.to_thread(_usage, servers[0], user_id))["reserved_tokens"]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return int(held)

    assert asyncio.run(held_at_once()) == 10 * (PROMPT_BOUND + 30)
