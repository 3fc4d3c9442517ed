"""`gatehouse reload` with Redis: published to every replica, each replica's outcome printed from the audit log, exit
1 when one failed (its error shown); SQLite and PostgreSQL, two in-process replicas."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from gatehouse.configuration.reload import Reloader
from gatehouse.settings import Settings
from tests.conftest import make_settings, running_app
from tests.support.server import base_env


async def gatehouse_reload(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatehouse",
        "reload",
        "--timeout",
        "20",
        env={**env, "COLUMNS": "300"},  # Rich's tables unwrapped
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_gatehouse_reload_prints_each_replica_and_fails_when_one_does(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    def settings(**extra: Any) -> Settings:
        return make_settings(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_key_prefix, **extra)

    env = base_env(database_url, tmp_path, REDIS_URL=redis_url, REDIS_PREFIX=redis_key_prefix)
    async with running_app(settings()) as a, running_app(settings()) as b:
        first, second = a.runtime.components.get(Reloader), b.runtime.components.get(Reloader)
        first.reread = second.reread = lambda: settings(rate_limit_per_minute=9)
        code, output = await gatehouse_reload(env, tmp_path)
        assert code == 0, output
        assert first.replica in output and second.replica in output
        assert output.count("reloaded") >= 2 and "RATE_LIMIT_PER_MINUTE" in output
        assert a.runtime.rate_limiter.limit_of("user_per_minute") == 9
        assert b.runtime.rate_limiter.limit_of("user_per_minute") == 9

        second.reread = lambda: settings(alert_webhook_url="https://hooks.example.com/x")  # no secret: refused
        first.reread = lambda: settings(rate_limit_per_minute=11)
        code, output = await gatehouse_reload(env, tmp_path)
        assert code == 1, output
        assert "failed" in output and "ALERT_WEBHOOK_SECRET" in output
        assert a.runtime.rate_limiter.limit_of("user_per_minute") == 11
        assert b.runtime.rate_limiter.limit_of("user_per_minute") == 9  # nothing applied there
