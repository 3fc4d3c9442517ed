"""The batched request-log writer: the hot path appends in memory; one INSERT per batch reaches the database.

Also carries API keys' last-used times, so that using a key never costs a write of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.accounts.service import record_key_use
from gatehouse.db.base import utcnow
from gatehouse.gateway.models import RequestLog
from gatehouse.ops.logging import get_logger

log = get_logger("gatehouse.requestlog")
MAX_BATCH = 1000
MAX_BUFFER = 100_000  # beyond this, the database is far behind: drop the oldest rows rather than run out of memory


class RequestLogWriter:
    """Buffers request-log rows and key last-used times; flushes every FLUSH seconds and at shutdown."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, flush_seconds: float) -> None:
        self._sessionmaker = sessionmaker
        self._flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._key_use: dict[int, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.dropped = 0

    def add(self, row: dict[str, Any]) -> None:
        """Queue one request's row (see RequestLog for the keys)."""
        row.setdefault("created_at", utcnow())
        self._rows.append(row)
        if len(self._rows) > MAX_BUFFER:
            overflow = len(self._rows) - MAX_BUFFER
            del self._rows[:overflow]
            self.dropped += overflow
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        """Write what is buffered now; returns how many request rows were written."""
        async with self._lock:
            rows, self._rows = self._rows, []
            key_use, self._key_use = self._key_use, {}
            if not rows and not key_use:
                return 0
            try:
                async with self._sessionmaker() as session, session.begin():
                    for start in range(0, len(rows), MAX_BATCH):
                        await session.execute(insert(RequestLog), rows[start : start + MAX_BATCH])
                    if key_use:
                        await record_key_use(session, last_used=key_use)
            except Exception:
                self._rows[:0] = rows
                for key_id, when in key_use.items():
                    self._key_use.setdefault(key_id, when)
                raise
            return len(rows)

    @property
    def pending(self) -> int:
        """Rows not yet written."""
        return len(self._rows)
