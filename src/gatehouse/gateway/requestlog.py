"""The batched request-log writer: the hot path appends in memory; one INSERT per batch reaches the database.

Also carries API keys' last-used times, so that using a key never costs a write of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from sqlalchemy import String, Table, insert, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.accounts.keys.service import KEY_USED, record_use
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import REQUEST_LOG_DROPPED
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import utcnow
from gatehouse.db.errors import is_lost_connection, is_storage_full
from gatehouse.db.statements import SqliteStore
from gatehouse.gateway.models import RequestLog

log = get_logger("gatehouse.requestlog")
MAX_BATCH = 1000
# On SQLite a batch is written on the event loop's thread (db/statements.py): about 15 µs a row, so 64 rows
# hold the loop for about 1 ms. A whole second of traffic at once (1,500 rows) stalled requests for 20 ms.
SQLITE_BATCH = 64
SQLITE_PAUSE = 0.001
MAX_BUFFER = 100_000  # beyond this, the database is far behind: drop the oldest rows rather than run out of memory
MAX_COUNT = 2**31 - 1  # INTEGER columns
COUNT_COLUMNS = ("prompt_tokens", "completion_tokens")
STRING_LENGTHS = {
    column.name: column.type.length
    for column in RequestLog.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


TABLE: Table = RequestLog.__table__  # type: ignore[assignment]
# The columns every row from the gateway carries (call.finish); other rows take the ORM's way, with defaults.
FULL_ROW = frozenset(column.name for column in TABLE.columns if not column.primary_key)


def _count(value: Any) -> int:
    try:
        return min(max(int(value), 0), MAX_COUNT)
    except (TypeError, ValueError, OverflowError):
        return 0


def _is_outage(exc: BaseException) -> bool:
    """Whether a failure is surely the database's (keep the rows for later), whatever the rows hold."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # A full disk (StorageFull, ENOSPC) is the database's too: the rows wait until space returns.
    if is_storage_full(exc) or is_lost_connection(exc):
        return True
    # OperationalError: unreachable, locked, shutting down; the others: no connection could be had in time.
    return isinstance(exc, OperationalError | PoolTimeout | TimeoutError | OSError)


class RequestLogWriter:
    """Buffers request-log rows and key last-used times; flushes every FLUSH seconds and at shutdown."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        flush_seconds: float,
        sqlite: SqliteStore | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._sqlite = sqlite  # on SQLite, batches go through the quota statements' connection (db/statements.py)
        self._flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._key_use: dict[int, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.dropped = 0  # rows lost: buffer overflow, or refused by the database

    def add(self, row: dict[str, Any]) -> None:
        """Queue one request's row (see RequestLog for the keys); values that cannot fit are clamped."""
        row.setdefault("created_at", utcnow())
        for name, length in STRING_LENGTHS.items():
            value = row.get(name)
            if isinstance(value, str) and (len(value) > length or "\x00" in value):
                row[name] = value.replace("\x00", "")[:length]  # PostgreSQL text holds no NUL
        for name in COUNT_COLUMNS:
            if name in row:
                row[name] = _count(row[name])
        self._rows.append(row)
        if len(self._rows) > MAX_BUFFER:
            overflow = len(self._rows) - MAX_BUFFER
            del self._rows[:overflow]
            self.dropped += overflow
            REQUEST_LOG_DROPPED.labels("overflow").inc(overflow)
        if len(self._rows) >= MAX_BATCH:
            self._wake.set()

    def key_used(self, key_id: int) -> None:
        """Note that a key was used now."""
        self._key_use[key_id] = utcnow()

    async def start(self) -> None:
        """Begin periodic flushing."""
        self._task = asyncio.create_task(self._run(), name="gatehouse-request-log")

    async def close(self) -> None:
        """Stop and write everything that is buffered."""
        await stop_task(self._task)
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                # Rows stay buffered and are retried at the next tick.
                log.error("request_log_flush_failed", error=str(exc), buffered=len(self._rows))

    async def flush(self) -> int:
        """Write what is buffered now; returns how many request rows were written.

        A batch the database refuses is retried row by row, and only the rows refused again are dropped
        (counted in `dropped` and gatehouse_request_log_dropped_total), so one bad row never holds back the others.
        When the database itself is failing (unreachable, or its disk full), nothing is dropped: the rows stay
        buffered (up to MAX_BUFFER) and this raises.
        """
        async with self._lock:
            rows, self._rows = self._rows, []
            key_use, self._key_use = self._key_use, {}
            if not rows and not key_use:
                return 0
            written = done = dropped = 0
            refusal: Exception | None = None
            try:
                size = SQLITE_BATCH if self._sqlite is not None else MAX_BATCH
                while done < len(rows):
                    batch = rows[done : done + size]
                    try:
                        cancelled = await self._insert_whole(batch)
                        written += len(batch)
                        done += len(batch)
                        if cancelled:
                            raise asyncio.CancelledError
                        if self._sqlite is not None:
                            # SQLite batches run on the loop: a pause between them lets the requests in flight
                            # take their next steps (one loop turn is not enough for a request to finish).
                            await asyncio.sleep(SQLITE_PAUSE)
                        continue
                    except Exception as exc:
                        if _is_outage(exc):
                            raise
                    for row in batch:
                        try:
                            await self._insert([row])
                            written += 1
                        except Exception as exc:
                            if _is_outage(exc) or not await self._database_answers():
                                raise
                            dropped += 1
                            refusal = exc
                        done += 1
                if key_use and self._sqlite is not None:
                    # Single statements on the quota statements' connection: a transaction through aiosqlite
                    # would hold the write lock across loop turns, and quota statements would wait for it.
                    for key_id, when in key_use.items():
                        await self._sqlite.scalar(KEY_USED, {"p_key_id": key_id, "p_when": when})
                elif key_use:
                    async with self._sessionmaker() as session, session.begin():
                        await record_use(session, last_used=key_use)
            except BaseException:  # cancellation too (close() stops a flush in progress): nothing is lost
                self._rows[:0] = rows[done:]
                for key_id, when in key_use.items():
                    self._key_use.setdefault(key_id, when)
                raise
            finally:
                if dropped:
                    self.dropped += dropped
                    REQUEST_LOG_DROPPED.labels("refused").inc(dropped)
                    # The error's class and driver message only: SQLAlchemy's text would repeat the rows.
                    reason = getattr(refusal, "orig", None) or refusal
                    log.error(
                        "request_log_rows_dropped",
                        dropped=dropped,
                        error=f"{type(reason).__name__}: {str(reason)[:200]}",
                    )
            return written

    async def _insert_whole(self, rows: list[dict[str, Any]]) -> bool:
        """`_insert`, carried to its end even when the flush is cancelled meanwhile (close() stops a flush in
        progress): a cancellation between the commit and the return (the session closing its connection) would
        otherwise put rows already written back in the buffer, and the next flush would write them twice.
        Returns whether the flush was cancelled meanwhile (the rows are written: the caller counts them, then
        stops)."""
        task = asyncio.ensure_future(self._insert(rows))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                await task
            except Exception:
                raise asyncio.CancelledError from None  # not written: the caller puts them back
            return True
        return False

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        if self._sqlite is not None and all(row.keys() == FULL_ROW for row in rows):
            await self._sqlite.insert_many(TABLE, rows)
            return
        async with self._sessionmaker() as session, session.begin():
            await session.execute(insert(RequestLog), rows)

    async def _database_answers(self) -> bool:
        """Whether the database works (so a row it refused is the row's fault, not an outage's)."""
        try:
            async with self._sessionmaker() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    @property
    def pending(self) -> int:
        """Rows not yet written."""
        return len(self._rows)
