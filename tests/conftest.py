"""Shared fixtures: every integration test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from gatehouse.app import create_app
from gatehouse.runtime import Runtime
from gatehouse.settings import Settings
from tests.support.server import ADMIN_EMAIL, ADMIN_KEY, ADMIN_PASSWORD, JWT_SECRET

pytest_plugins = ["tests.support.services"]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def fresh_database(kind: str, directory: Path) -> Iterator[str]:
    """A new, empty database of `kind` (sqlite | postgres), removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory}/gatehouse.db"
        return
    from tests.support.services import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database per test, once on SQLite and once on PostgreSQL."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app, independent of the developer's environment and .env file."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "jwt_secret": JWT_SECRET,
        "bootstrap_admin_email": ADMIN_EMAIL,
        "bootstrap_admin_password": ADMIN_PASSWORD,
        "bootstrap_admin_api_key": ADMIN_KEY,
        "redis_url": "",
        "gatehouse_config": None,
        "ollama_base_url": "",
        "openai_base_url": "",
        "model_refresh_seconds": 0,
        "request_log_flush_seconds": 0.2,
        "purge_schedule": "",  # a purge crossing a test at 04:00 UTC would add audit events; tests schedule their own
        "maintain_schedule": "",  # likewise the weekly maintenance
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Harness:
    """An app running in-process with its lifespan, and an httpx client authenticated as the bootstrap admin."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def as_key(self, key: str | None) -> dict[str, str]:
        """Headers for a request made with another key (or none)."""
        return {"authorization": f"Bearer {key}"} if key else {}


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Harness]:
    """Start the app's lifespan and yield a harness; shut down afterwards."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test", headers=headers) as client:
            yield Harness(app=app, client=client, settings=settings)


@pytest.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """The app on a fresh database (SQLite and PostgreSQL), with the built-in demo upstream."""
    async with running_app(make_settings(database_url, tmp_path)) as running:
        yield running


# --- the run's server logs hold no secret -----------------------------------------------------------------

LEAKS = pytest.StashKey[list[str]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a server log of this session holds a known password, key, token or message text."""
    from tests.support.known_secrets import leaks

    found = leaks()
    session.config.stash[LEAKS] = found
    if found and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Name each file and line where a secret was logged."""
    found = config.stash.get(LEAKS, [])
    if found:
        terminalreporter.section("secrets in server logs", red=True, bold=True)
        for finding in found:
            terminalreporter.write_line(finding)
