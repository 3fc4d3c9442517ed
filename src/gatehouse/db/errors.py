"""Database failures that are the infrastructure's, not a statement's: a lost or refused connection (a 503
database_unavailable, the connection replaced) and a full disk (a 503 storage_full naming the disk).

Drivers report them in many guises: asyncpg's own classes, SQLAlchemy's adapted ones (whose class name says
only `Error`), sqlite3's error codes. They are told apart here, once, by the whole chain of causes.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.errors import Unavailable

SQLITE_FULL = 13
DISK_FULL_SQLSTATE = "53100"
# Connection exceptions (08...), operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
# connect now: starting up or shutting down), too many connections (53300).
LOST_SQLSTATE_PREFIXES = ("08", "57P", "53300")
# A client-side connection that is broken or in a state it cannot leave (asyncpg's InternalClientError "cannot
# switch to state ...; another operation is in progress" after the server dropped it mid-conversation).
LOST_CLASS_NAMES = frozenset(
    {
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "CannotConnectNowError",
        "AdminShutdownError",
        "CrashShutdownError",
        "InternalClientError",
        "TooManyConnectionsError",
    }
)
STORAGE_RETRY_SECONDS = 30


class StorageFull(Unavailable):
    """The disk holding the database is full: free space on it (RUNBOOK "Storage"), then retry."""

    code = "storage_full"


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver's error it wraps (`orig`), and their causes."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or len(seen) > 10:
            continue
        seen.add(id(current))
        yield current
        pending += [getattr(current, "orig", None), current.__cause__]


def is_storage_full(exc: BaseException) -> bool:
    """Whether the database's disk is full (SQLite's SQLITE_FULL, PostgreSQL's disk_full, ENOSPC)."""
    for error in causes(exc):
        if isinstance(error, StorageFull):
            return True
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
            return True
        if getattr(error, "sqlstate", None) == DISK_FULL_SQLSTATE:
            return True
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
    return False


def is_lost_connection(exc: BaseException) -> bool:
    """Whether a failure means the connection is gone or was refused (replace it, answer 503), not a bad statement."""
    for error in causes(exc):
        if type(error).__name__ in LOST_CLASS_NAMES:
            return True
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(LOST_SQLSTATE_PREFIXES):
            return True
        if isinstance(error, ConnectionError):
            return True
    return False


def storage_full(url: URL) -> StorageFull:
    """The error for a full disk, naming where: the SQLite file's folder, or the PostgreSQL server's data disk."""
    if url.get_backend_name() == "sqlite" and url.database:
        where = f"the disk of {Path(url.database).resolve().parent} (DATA_DIR: the database file and its WAL)"
    else:
        where = f"the PostgreSQL server's data disk ({url.host or 'localhost'})"
    return StorageFull(
        f"The database cannot write: {where} is full. Nothing was recorded for this request. Free space there "
        '(RUNBOOK "Storage"); Gatehouse recovers by itself, without a restart.',
        headers={"retry-after": str(STORAGE_RETRY_SECONDS)},
    )


def classify_errors(engine: AsyncEngine) -> None:
    """Have the engine report a full disk as StorageFull and a lost connection as one (invalidated: a 503, and the
    pool replaces it), whatever guise the driver gives them."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _classify(context: Any) -> BaseException | None:
        original = context.original_exception
        if is_storage_full(original):
            return storage_full(engine.url)
        if not context.is_disconnect and is_lost_connection(original):
            context.is_disconnect = True
        return None
