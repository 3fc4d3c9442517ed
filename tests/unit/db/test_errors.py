"""Database failures told apart by their whole cause chain: a full disk, a lost or refused connection, or neither."""

from __future__ import annotations

import errno
import sqlite3

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gatehouse.db.errors import SQLITE_FULL, StorageFull, is_lost_connection, is_storage_full, storage_full


def _sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


def _adapted(cause: BaseException) -> DBAPIError:
    """As SQLAlchemy's asyncpg dialect reports a driver error: its own class named `Error`, the driver's as cause."""
    adapted = type("Error", (Exception,), {})(str(cause))
    adapted.__cause__ = cause
    return DBAPIError("SELECT 1", (), adapted)


def test_a_full_disk_in_any_guise() -> None:
    full = _sqlite_error("database or disk is full", SQLITE_FULL)
    assert is_storage_full(full)
    assert is_storage_full(DBAPIError.instance("COMMIT", (), full, sqlite3.Error))
    assert is_storage_full(_adapted(asyncpg.exceptions.DiskFullError("could not extend file")))
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_storage_full(_sqlite_error("database is locked", sqlite3.SQLITE_BUSY))
    assert not is_storage_full(_adapted(asyncpg.exceptions.UniqueViolationError("duplicate key")))


def test_a_lost_or_refused_connection_in_any_guise() -> None:
    assert is_lost_connection(_adapted(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")))
    assert is_lost_connection(_adapted(asyncpg.exceptions.AdminShutdownError("terminating connection")))
    assert is_lost_connection(
        asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress")
    )
    assert is_lost_connection(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    assert not is_lost_connection(_adapted(asyncpg.exceptions.UniqueViolationError("duplicate key")))
    assert not is_lost_connection(_adapted(asyncpg.exceptions.DiskFullError("could not extend file")))


def test_the_storage_full_error_names_the_disk() -> None:
    error = storage_full(make_url("sqlite+aiosqlite:////srv/gatehouse/data/gatehouse.db"))
    assert isinstance(error, StorageFull)
    assert (error.status, error.code) == (503, "storage_full")
    assert "/srv/gatehouse/data" in error.message and "DATA_DIR" in error.message
    assert error.headers["retry-after"]
    assert "PostgreSQL" in storage_full(make_url("postgresql+asyncpg://db.internal/gatehouse")).message
