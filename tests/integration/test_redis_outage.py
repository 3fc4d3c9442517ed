"""A Redis outage is degraded service, not an outage: with Redis unreachable (a proxy in front of it goes silent,
the costliest way to lose it) gateway requests are still served, rate limits fall back as
RATE_LIMIT_REDIS_FALLBACK says, logins behave, a stream elsewhere cannot be terminated (503, not 404), health
says degraded; and once Redis answers again every replica catches up. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from gatehouse.auth import passwords
from gatehouse.auth.cache import OUTAGE_TTL_SECONDS
from gatehouse.jobs.replicas import Heartbeat
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import create_member
from tests.support.proxy import SilentProxy, silent_proxy
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.redis
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
WAIT = 10.0


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps logins at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@asynccontextmanager
async def app_behind(
    proxy: SilentProxy, database_url: str, tmp_path: Path, prefix: str, **overrides: Any
) -> AsyncIterator[Harness]:
    settings = make_settings(database_url, tmp_path, redis_url=proxy.url, redis_prefix=prefix, **overrides)
    async with running_app(settings) as harness:
        yield harness


async def redis_lost(harness: Harness, proxy: SilentProxy) -> None:
    """Silence the proxy and wait until the app has noticed (its stream snapshots, every second, time out)."""
    proxy.silent.set()
    async with asyncio.timeout(WAIT):
        while harness.runtime.redis.up:
            await asyncio.sleep(0.05)


async def redis_back(harness: Harness, proxy: SilentProxy) -> None:
    proxy.silent.clear()
    assert await harness.runtime.redis.wait_up(WAIT)


async def set_limits(harness: Harness, **limits: int | None) -> None:
    response = await harness.client.put("/admin/rate-limits", json={"limits": limits})
    assert response.status_code == 200, response.text


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_local_shares_admit_each_replicas_part_and_nobody_waits_twice(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    async with silent_proxy(redis_url) as proxy, app_behind(proxy, database_url, tmp_path, redis_key_prefix) as app:
        member = await create_member(app)
        await set_limits(app, user_per_minute=9)
        for replica in ("other-replica-1", "other-replica-2"):  # three replicas serve this database
            await Heartbeat(app.runtime.db.sessionmaker, replica=replica).beat()
        as_member = app.as_key(member.key)
        assert (await app.client.post("/v1/chat/completions", json=CHAT, headers=as_member)).status_code == 200

        proxy.silent.set()  # nothing has noticed yet: the first Redis call pays one short timeout
        took, answers = [], []
        for _ in range(8):
            began = time.perf_counter()
            answers.append(await app.client.post("/v1/chat/completions", json=CHAT, headers=as_member))
            took.append(time.perf_counter() - began)
        statuses = [r.status_code for r in answers]
        assert statuses == [200, 200, 200, 429, 429, 429, 429, 429], statuses  # ceil(9 / 3) on this replica
        print(f"\nblackholed Redis: first request {took[0]:.3f} s, the next seven {sum(took[1:]):.3f} s in all")
        assert took[0] < 3, took
        assert sum(took[1:]) < 1.5, took  # no other request waited for Redis
        refused = answers[-1].json()["error"]
        assert refused["code"] == "rate_limited" and "its share, 3" in refused["message"]
        assert int(answers[-1].headers["retry-after"]) >= 1

        health = (await app.client.get("/admin/health")).json()
        assert health["status"] == "degraded"
        redis = health["redis"]
        assert (redis["state"], redis["rate_limits"], redis["rate_limit_replicas"]) == ("down", "local", 3)
        assert redis["down_since"] is not None and redis["down_error"]
        assert (await app.client.get("/readyz")).status_code == 200
        scraped = (await app.client.get("/metrics")).text
        assert metric(scraped, "gatehouse_redis_up") == 0
        assert 'gatehouse_rate_limit_fallback_total{outcome="limited",rule="user_per_minute"}' in scraped

        await redis_back(app, proxy)
        health = (await app.client.get("/admin/health")).json()
        assert (health["redis"]["state"], health["redis"]["rate_limits"]) == ("up", "redis")
        assert metric((await app.client.get("/metrics")).text, "gatehouse_redis_up") == 1
        # Redis counts again: the request made before the outage is still in its window.
        statuses = [
            (await app.client.post("/v1/chat/completions", json=CHAT, headers=as_member)).status_code for _ in range(9)
        ]
        assert statuses == [200] * 8 + [429], statuses


async def test_refuse_policy_answers_503_and_logins_never_500(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    async with (
        silent_proxy(redis_url) as proxy,
        app_behind(proxy, database_url, tmp_path, redis_key_prefix, rate_limit_redis_fallback="refuse") as app,
    ):
        member = await create_member(app)
        as_member = app.as_key(member.key)
        await redis_lost(app, proxy)
        refused = await app.client.post("/v1/chat/completions", json=CHAT, headers=as_member)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "rate_limiter_unavailable"
        ollama = await app.client.post("/api/chat", json=CHAT, headers=as_member)
        assert ollama.status_code == 503 and "Redis is unavailable" in ollama.json()["error"]
        assert (await app.client.get("/v1/models", headers=as_member)).status_code == 200  # no rate limit there
        login = await app.client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert login.status_code == 503 and login.json()["error"]["code"] == "rate_limiter_unavailable"
        health = (await app.client.get("/admin/health")).json()
        assert (health["status"], health["redis"]["rate_limits"]) == ("degraded", "refuse")
        await redis_back(app, proxy)
        assert (await app.client.post("/v1/chat/completions", json=CHAT, headers=as_member)).status_code == 200


async def test_login_lockout_holds_in_the_local_share(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    async with silent_proxy(redis_url) as proxy, app_behind(proxy, database_url, tmp_path, redis_key_prefix) as app:
        await set_limits(app, login_failures_account=3)
        await redis_lost(app, proxy)
        wrong = {"email": ADMIN_EMAIL, "password": "not the password"}
        statuses = [(await app.client.post("/auth/login", json=wrong)).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        locked = await app.client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert locked.status_code == 429 and locked.json()["error"]["code"] == "login_locked"
        assert int(locked.headers["retry-after"]) >= 1


async def test_a_stream_elsewhere_cannot_be_terminated_while_redis_is_down(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    async with silent_proxy(redis_url) as proxy, app_behind(proxy, database_url, tmp_path, redis_key_prefix) as app:
        await redis_lost(app, proxy)
        listed = (await app.client.get("/admin/streams")).json()
        assert listed == {"items": [], "complete": False}
        answer = await app.client.post("/admin/streams/0123456789abcdef/terminate", json={"reason": "runaway"})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert answer.json()["error"]["code"] == "streams_unavailable"
        await redis_back(app, proxy)
        answer = await app.client.post("/admin/streams/0123456789abcdef/terminate", json={"reason": "runaway"})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "stream_not_found"
        assert (await app.client.get("/admin/streams")).json() == {"items": [], "complete": True}


async def _refused_within(client: httpx.AsyncClient, headers: dict[str, str], seconds: float) -> float:
    began = time.perf_counter()
    async with asyncio.timeout(seconds):
        while (await client.get("/v1/models", headers=headers)).status_code != 401:
            await asyncio.sleep(0.05)
    return time.perf_counter() - began


async def test_a_replica_cut_off_from_redis_catches_up(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    """A and B share the database and Redis; B alone loses Redis. A key revoked on A meanwhile is refused by B
    within the outage's short cache life; an override set on A meanwhile reaches B when Redis is back."""
    async with (
        silent_proxy(redis_url) as to_a,
        silent_proxy(redis_url) as to_b,
        app_behind(to_a, database_url, tmp_path / "a", redis_key_prefix) as a,
        app_behind(to_b, database_url, tmp_path / "b", redis_key_prefix, run_migrations=False) as b,
    ):
        member = await create_member(a)
        as_member = b.as_key(member.key)
        created = await a.client.post(
            "/admin/upstreams",
            json={"name": "spare", "kind": "openai", "base_url": "http://127.0.0.1:9", "skip_check": True},
        )
        assert created.status_code == 201, created.text
        upstream = created.json()["id"]
        async with asyncio.timeout(WAIT):
            while b.runtime.upstreams.get("spare") is None:  # B heard of it through Redis
                await asyncio.sleep(0.05)
        assert (await b.client.get("/v1/models", headers=as_member)).status_code == 200  # cached on B

        await redis_lost(b, to_b)
        assert (await a.client.delete(f"/admin/keys/{member.key_id}")).status_code == 200
        override = {"state": "down", "reason": "maintenance"}
        assert (await a.client.put(f"/admin/upstreams/{upstream}/override", json=override)).status_code == 200
        waited = await _refused_within(b.client, as_member, OUTAGE_TTL_SECONDS + 2)
        assert waited <= OUTAGE_TTL_SECONDS + 1
        spare = b.runtime.upstreams.get("spare")
        assert spare is not None and spare.health.override is None  # not heard: Redis is away

        began = time.perf_counter()
        await redis_back(b, to_b)
        async with asyncio.timeout(WAIT):
            while (spare := b.runtime.upstreams.get("spare")) is None or spare.health.override is None:
                await asyncio.sleep(0.05)
        assert time.perf_counter() - began < WAIT  # the bus came back and B reloaded (the safety net is 30 s)
        assert (await b.client.get("/admin/health")).json()["redis"]["state"] == "up"
