"""PUT/GET/DELETE /admin/log-level and slow-SQL logging: DEBUG lines appear for the period and stop after it, on
every replica sharing Redis (a replica started during the period too), audited; slow statements are logged without
their parameters, with the request id (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from gatehouse.cli import app as cli
from gatehouse.core.logging import get_logger
from gatehouse.monitoring.loglevel import LogLevelControl
from gatehouse.settings import get_settings
from tests.conftest import Harness, make_settings, running_app

WAIT = 15.0
probe = get_logger("gatehouse.tests.loglevel")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _events(path: Path, event: str) -> list[dict[str, Any]]:
    return [line for line in _lines(path) if line.get("event") == event]


async def _audit(harness: Harness, action: str) -> list[dict[str, Any]]:
    answer = await harness.client.get("/admin/audit", params={"action": action})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def _until(check: Any, what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not await check():
            await asyncio.sleep(0.05)


async def test_debug_for_a_period_then_back(database_url: str, tmp_path: Path) -> None:
    log_file = tmp_path / "gatehouse.log"
    async with running_app(make_settings(database_url, tmp_path, log_file=log_file)) as harness:
        client = harness.client
        assert (await client.get("/admin/log-level")).json()["override"] is None
        probe.debug("probe_before")

        answer = await client.put("/admin/log-level", json={"level": "debug", "seconds": 2})
        assert answer.status_code == 200, answer.text
        assert answer.json()["level"] == "DEBUG"
        state = (await client.get("/admin/log-level")).json()
        assert state["level"] == "DEBUG" and state["base_level"] == "INFO" and state["shared"] is False
        assert state["override"]["by"] and state["override"]["until"]
        probe.debug("probe_during")

        async def reverted() -> bool:
            return (await client.get("/admin/log-level")).json()["override"] is None

        await _until(reverted, "the override to end by itself")
        assert (await client.get("/admin/log-level")).json()["level"] == "INFO"
        probe.debug("probe_after")

        changed = await _audit(harness, "log_level.changed")
        assert len(changed) == 1
        assert changed[0]["details"]["level"] == "DEBUG" and changed[0]["details"]["seconds"] == 2
        assert changed[0]["details"]["until"]
    events = {line.get("event") for line in _lines(log_file)}
    assert "probe_during" in events
    assert "probe_before" not in events and "probe_after" not in events
    assert _events(log_file, "log_level_override") and _events(log_file, "log_level_restored")


async def test_only_named_loggers_and_early_end(harness: Harness) -> None:
    client = harness.client
    answer = await client.put(
        "/admin/log-level", json={"level": "DEBUG", "minutes": 30, "loggers": ["gatehouse.tests"]}
    )
    assert answer.status_code == 200, answer.text
    state = (await client.get("/admin/log-level")).json()
    assert state["level"] == "INFO" and state["loggers"] == {"gatehouse.tests": "DEBUG"}
    assert probe.is_enabled_for(10) and not get_logger("gatehouse.gateway").is_enabled_for(10)

    ended = (await client.delete("/admin/log-level")).json()["ended"]
    assert ended["loggers"] == ["gatehouse.tests"]
    state = (await client.get("/admin/log-level")).json()
    assert state["override"] is None and state["loggers"] == {}
    assert not probe.is_enabled_for(10)
    assert (await client.delete("/admin/log-level")).json() == {"ended": None}  # nothing to end
    reset = await _audit(harness, "log_level.reset")
    assert len(reset) == 1 and reset[0]["details"]["loggers"] == ["gatehouse.tests"]


BAD_CHANGES = [
    ({"level": "LOUD", "minutes": 5}, "level"),
    ({"level": "DEBUG"}, "minutes"),
    ({"level": "DEBUG", "minutes": 5, "seconds": 5}, "minutes"),
    ({"level": "DEBUG", "minutes": 2000}, "minutes"),
    ({"minutes": 5}, "level"),
    ({"loggers": ["x"], "slow_sql_ms": 5, "minutes": 5}, "loggers"),
    ({"slow_sql_ms": -1, "minutes": 5}, "slow_sql_ms"),
]


async def test_bad_changes_name_the_field(harness: Harness) -> None:
    for body, param in BAD_CHANGES:
        answer = await harness.client.put("/admin/log-level", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["param"] == param, body
    assert (await harness.client.get("/admin/log-level")).json()["override"] is None
    assert await _audit(harness, "log_level.changed") == []


async def test_slow_sql_logged_without_parameters(database_url: str, tmp_path: Path) -> None:
    log_file = tmp_path / "gatehouse.log"
    marker = "marker-value-7f3e9a"
    async with running_app(make_settings(database_url, tmp_path, log_file=log_file, slow_sql_ms=0.001)) as harness:
        answer = await harness.client.get("/admin/users", params={"q": marker}, headers={"x-request-id": "req-slow-1"})
        assert answer.status_code == 200, answer.text
        async with harness.runtime.db.engine.connect() as conn:
            await conn.execute(text("SELECT :value AS v"), {"value": marker})
    slow = _events(log_file, "slow_sql")
    assert slow, "no slow_sql line"
    # The server's lines (not the test client's own httpx line, which shows the URL it asked for).
    served = [line for line in _lines(log_file) if not str(line.get("event")).startswith("HTTP Request:")]
    assert served and all(marker not in orjson.dumps(line).decode() for line in served)
    assert any(line.get("request_id") == "req-slow-1" for line in slow)
    assert all(line["duration_ms"] >= 0 and line["level"] == "warning" for line in slow)
    assert any("SELECT" in line["statement"] for line in slow)


async def test_log_sql_logs_every_statement_at_debug(database_url: str, tmp_path: Path) -> None:
    log_file = tmp_path / "gatehouse.log"
    async with running_app(make_settings(database_url, tmp_path, log_file=log_file, log_sql=True)) as harness:
        state = (await harness.client.get("/admin/log-level")).json()
        assert state["log_sql"] is True and state["loggers"] == {"gatehouse.sql": "DEBUG"} and state["level"] == "INFO"
        async with harness.runtime.db.engine.connect() as conn:
            await conn.execute(text("SELECT :value AS v"), {"value": "log-sql-marker-31"})
    statements = _events(log_file, "sql")
    assert {"SELECT ? AS v", "SELECT $1 AS v"} & {line["statement"] for line in statements}  # SQLite's, asyncpg's
    assert all(line["level"] == "debug" for line in statements)
    assert "log-sql-marker-31" not in log_file.read_text()
    assert not _events(log_file, "slow_sql")  # SLOW_SQL_MS stays 0


async def test_slow_sql_switched_on_for_a_period(harness: Harness, tmp_path: Path) -> None:
    sql_log = harness.runtime.components.get(LogLevelControl).sql_log
    assert sql_log.slow_ms == 0 and not sql_log.attached  # off: no hook on the engines
    answer = await harness.client.put("/admin/log-level", json={"slow_sql_ms": 0.001, "minutes": 5})
    assert answer.status_code == 200 and answer.json()["level"] is None
    state = (await harness.client.get("/admin/log-level")).json()
    assert state["slow_sql_ms"] == 0.001 and state["level"] == "INFO"
    assert sql_log.attached
    await harness.client.delete("/admin/log-level")
    assert (await harness.client.get("/admin/log-level")).json()["slow_sql_ms"] == 0
    assert not sql_log.attached
    # Naming gatehouse.sql at DEBUG logs every statement for the period (LOG_SQL without a restart).
    answer = await harness.client.put(
        "/admin/log-level", json={"level": "DEBUG", "loggers": ["gatehouse.sql"], "minutes": 5}
    )
    assert answer.status_code == 200, answer.text
    state = (await harness.client.get("/admin/log-level")).json()
    assert state["log_sql"] is True and state["loggers"] == {"gatehouse.sql": "DEBUG"} and sql_log.attached
    await harness.client.delete("/admin/log-level")
    assert (await harness.client.get("/admin/log-level")).json()["log_sql"] is False and not sql_log.attached


@pytest.mark.redis
async def test_every_replica_sharing_redis(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    def settings(name: str) -> Any:
        return make_settings(
            database_url, tmp_path / name, redis_url=redis_url, redis_prefix=redis_key_prefix, jwt_secret="j" * 40
        )

    async with running_app(settings("a")) as replica_a, running_app(settings("b")) as replica_b:
        assert (await replica_b.client.get("/admin/log-level")).json()["shared"] is True
        answer = await replica_a.client.put("/admin/log-level", json={"level": "DEBUG", "seconds": 4})
        assert answer.status_code == 200, answer.text

        async def b_follows() -> bool:
            state = (await replica_b.client.get("/admin/log-level")).json()
            return state["override"] is not None and state["override"]["level"] == "DEBUG"

        await _until(b_follows, "replica B to apply A's override")
        # A replica that starts during the period applies it from Redis.
        async with running_app(settings("c")) as replica_c:
            state = (await replica_c.client.get("/admin/log-level")).json()
            assert state["override"] is not None and state["level"] == "DEBUG"

            async def all_reverted() -> bool:
                states = [(await r.client.get("/admin/log-level")).json() for r in (replica_a, replica_b, replica_c)]
                return all(s["override"] is None for s in states)

            await _until(all_reverted, "every replica to revert")

        if not database_url.startswith("sqlite"):
            return  # the CLI's path below is the same on both backends (and each command costs a process start)
        # The CLI works through Redis, without the API: set, show, reset (in a thread: each runs its own loop).
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": redis_key_prefix,
            "DATA_DIR": str(tmp_path / "cli"),
        }
        done = await asyncio.to_thread(gatehouse, env, "log-level", "set", "WARNING", "--minutes", "5")
        assert done.exit_code == 0, done.output
        assert "WARNING until" in done.stdout

        async def b_warns() -> bool:
            override = (await replica_b.client.get("/admin/log-level")).json()["override"]
            return override is not None and override["level"] == "WARNING" and override["by"] == "cli"

        await _until(b_warns, "replica B to apply the CLI's override")
        shown = await asyncio.to_thread(gatehouse, env, "log-level", "show")
        assert shown.exit_code == 0 and "override: WARNING" in shown.stdout, shown.output
        ended = await asyncio.to_thread(gatehouse, env, "log-level", "reset")
        assert ended.exit_code == 0 and "ended: WARNING" in ended.stdout, ended.output

        async def b_back() -> bool:
            return (await replica_b.client.get("/admin/log-level")).json()["override"] is None

        await _until(b_back, "replica B to end the override")
        changed = await _audit(replica_a, "log_level.changed")
        assert [item["actor_type"] for item in changed] == ["system", "key"]  # newest first: the CLI, then A's API
        assert [item["details"]["level"] for item in changed] == ["WARNING", "DEBUG"]


def test_cli_without_redis_says_to_use_the_api(tmp_path: Path) -> None:
    env = {"REDIS_URL": "", "DATABASE_URL": f"sqlite:///{tmp_path}/g.db", "DATA_DIR": str(tmp_path)}
    done = gatehouse(env, "log-level", "set", "DEBUG")
    assert done.exit_code == 1
    assert "REDIS_URL is not set" in done.stderr and "PUT" in done.stderr and "/admin/log-level" in done.stderr


def gatehouse(env: dict[str, str], *args: str) -> Result:
    """Run a command in this process with these environment variables, the settings read afresh."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args), env=env)
    finally:
        get_settings.cache_clear()


async def test_redis_away_refuses_with_a_clear_503(tmp_path: Path) -> None:
    """With REDIS_URL set but Redis unreachable, the override cannot reach every replica: refused, not audited."""
    closed_port = "redis://127.0.0.1:9"  # discard: nothing listens there
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/gatehouse.db", tmp_path, redis_url=closed_port)
    async with running_app(settings) as harness:
        answer = await harness.client.put("/admin/log-level", json={"level": "DEBUG", "minutes": 5})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "unavailable" and "Redis" in answer.json()["error"]["message"]
        assert (await harness.client.get("/admin/log-level")).json()["override"] is None
        assert await _audit(harness, "log_level.changed") == []
