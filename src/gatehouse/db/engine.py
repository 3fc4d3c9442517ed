"""Async engine and session factory for SQLite (WAL) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gatehouse.db.errors import classify_errors
from gatehouse.settings import Settings

READ_ONLY_OPTION = "gatehouse_read_only"
AUTOCOMMIT_OPTION = "gatehouse_autocommit"


def ensure_sqlite_directory(database_url: str) -> None:
    """Create the folder of a SQLite file, so a fresh checkout starts without a manual mkdir."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(settings: Settings) -> AsyncEngine:
    """One engine per process; SQLite gets WAL and a busy timeout, PostgreSQL a sized pool."""
    url = make_url(settings.database_url)
    kwargs: dict[str, Any] = {"pool_pre_ping": False}
    if url.get_backend_name() == "sqlite":
        ensure_sqlite_directory(settings.database_url)
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        classify_errors(engine)
        return engine
    kwargs.update(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "gatehouse"}, "timeout": 10},
    )
    engine = create_async_engine(url, **kwargs)
    classify_errors(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions, so BEGIN is explicit (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
        # fails at once with "database is locked" when another writer got in between (busy_timeout
        # does not apply to that upgrade). SQLite has one writer at a time either way. A read-only
        # connection (see read_only) begins deferred: in WAL it reads a snapshot and never waits for a writer.
        options = connection.get_execution_options()
        if options.get(AUTOCOMMIT_OPTION):
            return  # each statement is its own transaction (see create_autocommit_engine)
        if options.get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for transactions that only read: on SQLite they do not queue behind writers.

    A write through it may fail with "database is locked" on SQLite; PostgreSQL ignores the option.
    """
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def create_autocommit_engine(settings: Settings) -> AsyncEngine:
    """A small engine of its own for single atomic statements (the quota reservation and settlement).

    Each statement is its own transaction: no BEGIN/COMMIT round trips around it (on SQLite it takes the
    write lock by itself). Autocommit is set once per connection, not at every checkout, and a connection
    goes back to the pool without a ROLLBACK: both would cost a round trip per request.
    """
    url = make_url(settings.database_url)
    kwargs: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        "execution_options": {AUTOCOMMIT_OPTION: True},  # tells SQLite's begin hook not to open a transaction
    }
    if url.get_backend_name() == "sqlite":
        ensure_sqlite_directory(settings.database_url)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        classify_errors(engine)
        return engine
    size = max(2, settings.db_pool_size // 2)
    engine = create_async_engine(
        url,
        pool_size=size,
        max_overflow=size,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "gatehouse"}, "timeout": 10},
        **kwargs,
    )
    classify_errors(engine)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
