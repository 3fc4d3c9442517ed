"""Malformed input is a 4xx naming the field, a bug is a JSON 500 with a request id, and the request log,
shutdown, readiness and SQLite reads hold up when something is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from gatehouse.auth import passwords
from gatehouse.auth.access import public
from gatehouse.core import middleware
from gatehouse.db.engine import create_engine
from gatehouse.gateway.models import RequestLog
from gatehouse.monitoring import health
from gatehouse.settings import normalise_database_url
from tests.conftest import Harness, make_settings, running_app
from tests.support.request_log import log_row
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD

TOO_BIG = "99999999999999999999"  # beyond int64 too
UNREACHABLE_DATABASE = "postgresql+asyncpg://gatehouse:not-this-password@127.0.0.1:1/nowhere"
_serial = itertools.count(1)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps each login and bootstrap at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


class Recorder:
    """Stands in for a module's structlog logger: keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return record

    def events(self, level: str | None = None) -> list[str]:
        return [event for lvl, event, _ in self.records if level is None or lvl == level]


def error_of(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert isinstance(error, dict), response.text
    return error


async def new_user(harness: Harness, **fields: Any) -> dict[str, Any]:
    response = await harness.client.post("/admin/users", json={"email": f"h{next(_serial)}@example.com", **fields})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def new_key(harness: Harness, user_id: int) -> dict[str, Any]:
    response = await harness.client.post(f"/admin/users/{user_id}/keys", json={"name": "test"})
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


# --- malformed input -------------------------------------------------------------------------------


async def test_out_of_range_path_ids_are_422_naming_the_parameter(harness: Harness) -> None:
    requests: list[tuple[str, str, dict[str, Any] | None, str]] = []
    for bad in (TOO_BIG, str(2**31), "0", "-1"):
        requests += [
            ("GET", f"/admin/users/{bad}", None, "user_id"),
            ("PATCH", f"/admin/users/{bad}", {"display_name": "x"}, "user_id"),
            ("POST", f"/admin/users/{bad}/keys", {"name": "x"}, "user_id"),
            ("POST", f"/admin/users/{bad}/disable", None, "user_id"),
            ("POST", f"/admin/users/{bad}/enable", None, "user_id"),
            ("DELETE", f"/me/keys/{bad}", None, "key_id"),
        ]
    for method, path, body, param in requests:
        response = await harness.client.request(method, path, json=body)
        assert response.status_code == 422, (method, path, response.text)
        assert error_of(response)["param"] == param, (method, path)
        assert param in error_of(response)["message"]
    largest = await harness.client.get(f"/admin/users/{2**31 - 1}")
    assert largest.status_code == 404, largest.text


async def test_nul_characters_are_refused_naming_the_field(harness: Harness) -> None:
    user = await new_user(harness)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/admin/users", {"email": "nul\x00@example.com"}, "email"),
        ("POST", "/admin/users", {"email": "fine@example.com", "display_name": "Ma\x00llory"}, "display_name"),
        ("PATCH", f"/admin/users/{user['id']}", {"display_name": "\x00"}, "display_name"),
        ("POST", "/me/keys", {"name": "lap\x00top"}, "name"),
        ("POST", f"/admin/users/{user['id']}/keys", {"name": "\x00"}, "name"),
        ("POST", "/auth/login", {"email": "admin\x00@example.com", "password": "whatever-it-is"}, "email"),
    ]
    for method, path, body, param in cases:
        response = await harness.client.request(method, path, json=body)
        assert response.status_code == 422, (path, body, response.text)
        assert error_of(response)["param"] == param, (path, body)
        assert param in error_of(response)["message"]
    # Nothing half-done: the refused user does not exist.
    assert (await harness.client.post("/admin/users", json={"email": "fine@example.com"})).status_code == 201


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59+00:00", "2400-01-01T00:00Z"])
async def test_absurd_expiry_is_refused_naming_expires_at(harness: Harness, expires_at: str) -> None:
    user = await new_user(harness)
    for path in ("/me/keys", f"/admin/users/{user['id']}/keys"):
        response = await harness.client.post(path, json={"name": "forever", "expires_at": expires_at})
        assert response.status_code == 400, (path, response.text)
        assert error_of(response)["param"] == "expires_at"
        assert error_of(response)["code"] == "invalid_expiry"
    distant = await harness.client.post("/me/keys", json={"name": "long", "expires_at": "2090-01-01T00:00:00+02:00"})
    assert distant.status_code == 201, distant.text


async def test_oversized_keys_are_refused_before_any_lookup(harness: Harness) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.app), base_url="http://t") as client:
        response = await client.get("/v1/models", headers={"authorization": "Bearer " + "k" * 5000})
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert len(harness.runtime.auth.cache) == 0  # not even remembered as unknown


# --- the last-resort 500 ---------------------------------------------------------------------------


async def test_an_unhandled_exception_is_a_json_500_with_the_request_id(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(middleware, "log", recorder)

    async def broken() -> dict[str, str]:
        raise RuntimeError("a bug")

    for path in ("/test/broken", "/api/test-broken"):
        harness.app.add_api_route(path, broken, methods=["GET"], dependencies=[public()])

    openai = await harness.client.get("/test/broken", headers={"x-request-id": "req-500"})
    assert openai.status_code == 500
    assert openai.headers["x-request-id"] == "req-500"
    assert openai.headers["content-type"] == "application/json"
    assert openai.json() == {
        "error": {
            "type": "server_error",
            "code": "internal_error",
            "message": "Internal error; the request id is req-500: quote it to an operator.",
        }
    }
    ollama = await harness.client.get("/api/test-broken")
    assert ollama.status_code == 500
    generated = ollama.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert ollama.json() == {"error": f"Internal error; the request id is {generated}: quote it to an operator."}

    assert recorder.events("exception") == ["unhandled_error", "unhandled_error"]
    access = [fields for level, event, fields in recorder.records if event == "request"]
    assert [a["status"] for a in access] == [500, 500]
    # The app still serves.
    assert (await harness.client.get("/healthz")).status_code == 200


async def test_incoming_request_ids_fit_the_request_log(harness: Harness) -> None:
    longest = "r" * middleware.MAX_INCOMING_ID
    assert RequestLog.__table__.c.request_id.type.length >= middleware.MAX_INCOMING_ID
    kept = await harness.client.get("/healthz", headers={"x-request-id": longest})
    assert kept.headers["x-request-id"] == longest
    replaced = await harness.client.get("/healthz", headers={"x-request-id": longest + "r"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


# --- the request log -------------------------------------------------------------------------------


async def logged(harness: Harness) -> list[RequestLog]:
    async with harness.runtime.db.sessionmaker() as db:
        return list((await db.execute(select(RequestLog).order_by(RequestLog.id))).scalars())


async def test_values_that_cannot_fit_are_clamped(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path, request_log_flush_seconds=3600)) as harness:
        writer = harness.runtime.request_log
        writer.add(
            log_row(
                request_id="x" * 500,
                model="m\x00" * 300,
                error_code="e" * 100,
                prompt_tokens=-5,
                completion_tokens=2**40,
            )
        )
        assert await writer.flush() == 1
        assert writer.dropped == 0
        (row,) = await logged(harness)
        assert row.request_id == "x" * 64
        assert row.model == "m" * 200
        assert row.error_code == "e" * 64
        assert (row.prompt_tokens, row.completion_tokens) == (0, 2**31 - 1)


async def test_a_row_the_database_refuses_does_not_hold_back_the_others(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(make_settings(database_url, tmp_path, request_log_flush_seconds=3600)) as harness:
        writer = harness.runtime.request_log
        recorder = Recorder()
        monkeypatch.setattr("gatehouse.gateway.requestlog.log", recorder)
        writer.add(log_row(request_id="before"))
        # Queued as is (not through add()), as a bug elsewhere could: NOT NULL fails on every backend.
        writer._rows.append(log_row(request_id="bad", status_code=None))
        if harness.runtime.db.engine.dialect.name == "postgresql":
            writer._rows.append(log_row(request_id="y" * 65))  # too long for String(64) there
        writer.add(log_row(request_id="after"))

        assert await writer.flush() == 2
        assert writer.pending == 0
        assert writer.dropped == (2 if harness.runtime.db.engine.dialect.name == "postgresql" else 1)
        assert recorder.events("error") == ["request_log_rows_dropped"]  # once per flush, not per row
        assert [r.request_id for r in await logged(harness)] == ["before", "after"]

        writer.add(log_row(request_id="later"))
        assert await writer.flush() == 1
        assert [r.request_id for r in await logged(harness)] == ["before", "after", "later"]


async def test_rows_wait_while_the_database_is_unreachable(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path, request_log_flush_seconds=3600)) as harness:
        writer = harness.runtime.request_log
        for n in range(3):
            writer.add(log_row(request_id=f"r{n}"))
        writer.key_used(1)
        working, sqlite = writer._sessionmaker, writer._sqlite
        down = create_async_engine(UNREACHABLE_DATABASE)
        writer._sessionmaker = async_sessionmaker(down)
        writer._sqlite = None  # SQLite batches take the statements' own connection: send them the broken way too
        try:
            with pytest.raises((OSError, DBAPIError)):
                await writer.flush()
        finally:
            writer._sessionmaker, writer._sqlite = working, sqlite
            await down.dispose()
        assert (writer.pending, writer.dropped) == (3, 0)  # an outage drops nothing
        assert await writer.flush() == 3
        assert [r.request_id for r in await logged(harness)] == ["r0", "r1", "r2"]


async def test_a_failing_shutdown_step_does_not_skip_the_others(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, request_log_flush_seconds=3600)
    async with running_app(settings) as harness:

        async def broken_close() -> None:
            raise RuntimeError("cannot close")

        harness.runtime.rate_limiter.close = broken_close  # type: ignore[method-assign]
        harness.runtime.request_log.add(log_row(request_id="at-shutdown"))
    # The request log was still flushed after the rate limiter failed to close (and the engine disposed).
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            ids = (await conn.execute(select(RequestLog.request_id))).scalars().all()
    finally:
        await engine.dispose()
    assert ids == ["at-shutdown"]


# --- readiness -------------------------------------------------------------------------------------


async def test_readyz_names_the_failure_without_the_drivers_text(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(health, "log", recorder)
    down = create_async_engine(UNREACHABLE_DATABASE)
    monkeypatch.setattr(harness.runtime.db, "read_engine", down)
    try:
        response = await harness.client.get("/readyz")
    finally:
        await down.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == "database"
    assert re.fullmatch(r"database unreachable: \w+; see the server log", body["checks"]["database"]), body
    for leak in ("127.0.0.1", "nowhere", "gatehouse", "Connect call failed"):
        assert leak not in response.text
    ((level, event, fields),) = recorder.records
    assert (level, event) == ("error", "readiness_database_failed")
    assert "127.0.0.1" in fields["error"]  # the operator gets the whole story in the log


# --- SQLite: reads do not queue behind writers -----------------------------------------------------


async def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.db"
    settings = make_settings(f"sqlite+aiosqlite:///{path}", tmp_path, request_log_flush_seconds=3600)
    async with running_app(settings) as harness:
        user = await new_user(harness, password="a-good-long-password")
        key = (await new_key(harness, user["id"]))["key"]  # never used yet: a cold key
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.app), base_url="http://t") as client:
            login = await client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            assert login.status_code == 200, login.text
            cookie = {"cookie": f"gatehouse_session={login.cookies['gatehouse_session']}"}
            client.cookies.clear()

            writer = sqlite3.connect(path, isolation_level=None, timeout=1)
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("UPDATE user_account SET display_name = 'busy' WHERE id = ?", (user["id"],))
                # busy_timeout is 30 s: a read that took the write lock would still be waiting at 5.
                async with asyncio.timeout(5):
                    cold = await client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
                    assert cold.status_code == 200, cold.text
                    by_cookie = await client.get("/v1/models", headers=cookie)
                    assert by_cookie.status_code == 200, by_cookie.text
                    ready = await client.get("/readyz")
                    assert ready.status_code == 200, ready.text
            finally:
                writer.execute("ROLLBACK")
                writer.close()


async def test_read_only_transactions_begin_deferred_on_sqlite(tmp_path: Path) -> None:
    statements: list[str] = []
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/g.db", tmp_path)
    async with running_app(settings) as harness:
        from sqlalchemy import event

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(harness.runtime.db.engine.sync_engine, "before_cursor_execute", record)
        try:
            async with harness.runtime.db.read_sessionmaker() as db:
                await db.execute(select(func.count()).select_from(RequestLog))
            async with harness.runtime.db.sessionmaker() as db:
                await db.execute(text("SELECT 1"))
        finally:
            event.remove(harness.runtime.db.engine.sync_engine, "before_cursor_execute", record)
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN", "BEGIN IMMEDIATE"]


# --- startup ---------------------------------------------------------------------------------------


async def test_the_dummy_hash_is_ready_before_the_first_login(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passwords, "_dummy_hash", None)
    async with running_app(make_settings(database_url, tmp_path)):
        assert passwords._dummy_hash is not None


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["disable", "prefer", "allow"])
async def test_postgres_urls_with_sslmode_connect(postgres_database_url: str, tmp_path: Path, mode: str) -> None:
    libpq_style = postgres_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    url = normalise_database_url(f"{libpq_style}{'&' if '?' in libpq_style else '?'}sslmode={mode}")
    engine = create_engine(make_settings(url, tmp_path))
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_a_row_sqlite_cannot_bind_leaves_no_transaction_open(database_url: str, tmp_path: Path) -> None:
    """SQLite's statement connection is shared with the quota statements: a failed batch (here a value the
    driver cannot bind, not an sqlite3 error) must roll back, or every later write would wait behind it."""
    from datetime import UTC, datetime

    from gatehouse.db.statements import SqliteStore
    from gatehouse.gateway.requestlog import TABLE

    async with running_app(make_settings(database_url, tmp_path, request_log_flush_seconds=3600)) as harness:
        store = harness.runtime.statements
        if not isinstance(store, SqliteStore):
            return  # PostgreSQL batches go through SQLAlchemy sessions, which roll back by themselves
        bad = {**log_row(request_id="too-big"), "status_code": 2**70, "created_at": datetime.now(UTC)}
        with pytest.raises(OverflowError):
            await store.insert_many(TABLE, [bad])
        assert not store._connection().in_transaction
        harness.runtime.request_log.add(log_row(request_id="after"))
        assert await harness.runtime.request_log.flush() == 1
        assert [r.request_id for r in await logged(harness)] == ["after"]


async def test_a_flush_cancelled_midway_loses_no_row(database_url: str, tmp_path: Path) -> None:
    """close() cancels a flush in progress: what it had not written yet goes back to the buffer."""
    import asyncio

    async with running_app(make_settings(database_url, tmp_path, request_log_flush_seconds=3600)) as harness:
        writer = harness.runtime.request_log
        from gatehouse.core.tasks import stop

        await stop(writer._task)  # its periodic flush would take the rows too (it wakes at 1,000 buffered)
        writer._task = None
        for n in range(3000):
            writer.add(log_row(request_id=f"r{n}"))
        flushing = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0.005)
        flushing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flushing
        written = len(await logged(harness))
        assert written + writer.pending == 3000 and writer.dropped == 0
        assert await writer.flush() == 3000 - written
        assert len({r.request_id for r in await logged(harness)}) == 3000
