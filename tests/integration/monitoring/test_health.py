"""GET /admin/health: every dependency in detail, always a 200, never a hang (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse import __version__
from gatehouse.core.redis_state import RedisState
from gatehouse.monitoring.health import HealthCheck
from tests.conftest import Harness, make_settings, running_app
from tests.support.server import free_port

# Generous: the checks give up after a second or two; this only tells a slow answer from a hung one.
ANSWER_WITHIN = 15


async def _health(harness: Harness) -> dict[str, Any]:
    async with asyncio.timeout(ANSWER_WITHIN):
        response = await harness.client.get("/admin/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_health_reports_every_dependency(harness: Harness) -> None:
    runtime = harness.runtime
    body = await _health(harness)
    assert body["status"] == "ok", body
    assert body["version"] == __version__
    assert body["replica"] == runtime.bus.origin
    assert body["uptime_seconds"] >= 0
    database = body["database"]
    assert database["kind"] == runtime.db.engine.dialect.name
    assert database["status"] == "ok" and database["latency_ms"] >= 0 and database["error"] is None
    assert body["migrations"] == {
        "status": "ok",
        "current": list(runtime.db.head_revisions),
        "head": list(runtime.db.head_revisions),
    }
    assert body["redis"] == {
        "status": "not configured",
        "latency_ms": None,
        "error": None,
        "state": "not configured",
        "down_since": None,
        "down_error": None,
        "rate_limits": "memory",
        "rate_limit_replicas": None,
    }
    assert body["upstreams"] == runtime.upstreams.status() and body["upstreams"]
    assert body["streams"] == {"local": 0, "all": 0}


async def test_health_with_redis(database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str) -> None:
    settings = make_settings(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_key_prefix)
    async with running_app(settings) as running:
        body = await _health(running)
    assert body["status"] == "ok", body
    redis = body["redis"]
    assert redis["status"] == "ok" and redis["latency_ms"] >= 0 and redis["error"] is None
    assert (redis["state"], redis["down_since"], redis["rate_limits"]) == ("up", None, "redis")


async def test_unreachable_redis_is_reported_not_waited_for(harness: Harness) -> None:
    # As when Redis goes away under a running replica: the settings name a port nobody listens on.
    health = harness.runtime.components.get(HealthCheck)
    state = health.redis
    health.redis = RedisState(f"redis://127.0.0.1:{free_port()}/0")
    try:
        body = await _health(harness)
    finally:
        health.redis = state
    assert body["status"] == "degraded", body
    redis = body["redis"]
    assert redis["status"] == "error" and redis["latency_ms"] is None
    assert redis["error"].startswith("ConnectionError"), redis
    assert redis["state"] == "up"  # the PING failed; no request of this replica's has yet
    assert body["database"]["status"] == "ok"


async def test_a_down_upstream_is_degraded(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    upstreams = [
        {"name": "primary", "kind": "ollama", "state": "up", "last_error": None},
        {"name": "backup", "kind": "openai", "state": "down", "last_error": "connection refused"},
    ]
    monkeypatch.setattr(harness.runtime.upstreams, "status", lambda: upstreams)
    body = await _health(harness)
    assert body["status"] == "degraded"
    assert body["upstreams"] == upstreams


async def test_migrations_behind_head_is_failing(harness: Harness) -> None:
    runtime = harness.runtime
    actual = runtime.db.head_revisions
    runtime.db.head_revisions = ("9999",)
    try:
        body = await _health(harness)
    finally:
        runtime.db.head_revisions = actual
    assert body["status"] == "failing"
    assert body["migrations"] == {"status": "behind", "current": list(actual), "head": ["9999"]}
    assert body["database"]["status"] == "ok"


async def test_unreachable_database_is_reported_not_a_500(harness: Harness) -> None:
    assert (await harness.client.get("/me")).status_code == 200  # the admin key is now in the auth cache
    runtime = harness.runtime
    working = runtime.db.read_engine
    dead = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none", connect_args={"timeout": 2})
    runtime.db.read_engine = dead
    try:
        body = await _health(harness)
    finally:
        runtime.db.read_engine = working
        await dead.dispose()
    assert body["status"] == "failing"
    database = body["database"]
    assert database["kind"] == "postgresql" and database["status"] == "error" and database["latency_ms"] is None
    assert database["error"]
    assert body["migrations"]["status"] == "unknown" and body["migrations"]["current"] is None
