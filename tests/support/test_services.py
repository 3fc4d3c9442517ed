"""Tests of tests/support/services.py: the real PostgreSQL and Redis servers the test suite runs against."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import services
from tests.support.services import (
    ServiceUnavailable,
    create_postgres_database,
    drop_postgres_database,
    flush_redis_prefix,
    port_answers,
    postgres_server,
    redis_database_url,
    unique_redis_prefix,
)


def test_port_answers_tells_open_from_closed_ports() -> None:
    """port_answers() is True while something listens and False once it stopped."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_answers("127.0.0.1", port)
    assert not port_answers("127.0.0.1", port)


@pytest.mark.postgres
async def test_postgres_server_runs_queries() -> None:
    """The session's PostgreSQL accepts the admin URL and runs SELECT 1."""
    conn = await asyncpg.connect(postgres_server())
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_create_and_drop_database() -> None:
    """A created database is empty and usable through SQLAlchemy, and drop removes it despite users."""
    # Called while this test's event loop runs, which the sync API must cope with.
    url = create_postgres_database()
    name = make_url(url).database
    assert url.startswith("postgresql+asyncpg://")
    assert name is not None
    assert name.startswith(f"gatehouse_test_{os.getpid()}_")

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_database()")) == name
            tables = await conn.scalar(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
            assert tables == 0
    finally:
        await engine.dispose()

    # A connection left open must not block the drop: it gets terminated.
    leftover = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    drop_postgres_database(url)
    leftover.terminate()

    admin = await asyncpg.connect(postgres_server())
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    finally:
        await admin.close()


def test_database_names_are_unique_and_checked() -> None:
    """Bad prefixes and protected databases are refused before touching any server."""
    with pytest.raises(ValueError, match="prefix"):
        create_postgres_database("Robert'); DROP TABLE students;--")
    with pytest.raises(ValueError, match="refusing"):
        drop_postgres_database("postgresql+asyncpg://postgres@127.0.0.1:5432/template1")


@pytest.mark.redis
def test_redis_ping_and_prefix_flush() -> None:
    """Redis answers PING, and flushing a prefix deletes its keys only."""
    url = redis_database_url()
    mine, other = unique_redis_prefix(), unique_redis_prefix()
    assert mine != other
    client = redis.Redis.from_url(url)
    try:
        assert client.ping()
        client.mset({f"{mine}a": 1, f"{mine}b": 2, f"{other}a": 3})
        assert flush_redis_prefix(url, mine) == 2
        assert client.exists(f"{mine}a", f"{mine}b") == 0
        assert client.get(f"{other}a") == b"3"
    finally:
        flush_redis_prefix(url, other)
        client.close()
    with pytest.raises(ValueError, match="empty prefix"):
        flush_redis_prefix(url, "")


@pytest.mark.postgres
@pytest.mark.redis
async def test_throwaway_servers_start_answer_and_vanish() -> None:
    """Throwaway PostgreSQL and Redis servers answer, then stop() shuts them down and deletes their files."""
    pg = services._start_throwaway_postgres()
    try:
        rd = services._start_throwaway_redis()
        try:
            assert pg.port != services.POSTGRES_PORT
            assert rd.port != services.REDIS_PORT
            conn = await asyncpg.connect(pg.url)
            try:
                assert await conn.fetchval("SHOW fsync") == "off"
            finally:
                await conn.close()
            client = redis.Redis.from_url(rd.url)
            try:
                assert client.ping()
            finally:
                client.close()
        finally:
            rd.stop()
    finally:
        pg.stop()
    for server in (pg, rd):
        assert not port_answers("127.0.0.1", server.port)
        assert not server.base_dir.exists()
    rd.stop()  # idempotent


def test_stale_throwaway_directories_are_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Directories of throwaway servers whose session died are removed; live sessions' ones are kept."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    root = Path(tempfile.gettempdir())
    stale = Path(tempfile.mkdtemp(prefix=f"gatehouse-test-redis-{int(dead.stdout)}-", dir=root))
    (stale / "redis.pid").write_text("1 1\n")  # pid 1 is not that server: it must not be signalled
    live = Path(tempfile.mkdtemp(prefix=f"gatehouse-test-redis-{os.getpid()}-", dir=root))
    monkeypatch.setattr(services, "_reaped", False)
    try:
        services._reap_stale_servers()
        assert not stale.exists()
        assert live.exists()
    finally:
        live.rmdir()


def test_missing_binaries_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without server binaries the error says what to run or set."""
    monkeypatch.setattr(services, "_pg_bindir", lambda: None)
    monkeypatch.setattr("shutil.which", lambda _name: None)
    with pytest.raises(ServiceUnavailable, match=r"scripts/test-services\.sh.*TEST_POSTGRES_URL"):
        services._start_throwaway_postgres()
    with pytest.raises(ServiceUnavailable, match=r"scripts/test-services\.sh.*TEST_REDIS_URL"):
        services._start_throwaway_redis()
