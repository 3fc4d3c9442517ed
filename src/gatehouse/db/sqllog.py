"""Slow-SQL logging (SLOW_SQL_MS) and every statement at DEBUG (LOG_SQL), both off by default.

The engine hooks are attached only while one of them is on, so when off a statement pays nothing for them. A line
carries the statement's text as SQLAlchemy sent it, with its placeholders (`?`, `$1`) and never their values, its
duration and, through the log context, the request id. The quota statements that db/statements.py sends on
connections of its own are not seen here (they are timed in gatehouse_db_statement_duration_seconds).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.core.logging import get_logger

log = get_logger("gatehouse.sql")
MAX_STATEMENT_CHARS = 2000  # a huge IN (...) list or a bulk VALUES is cut, with its length said
_STARTED_KEY = "gatehouse_sql_log_started"


def _text(statement: str) -> str:
    flat = " ".join(statement.split())
    if len(flat) <= MAX_STATEMENT_CHARS:
        return flat
    return f"{flat[:MAX_STATEMENT_CHARS]}... ({len(flat)} characters)"


class SqlLog:
    """Logs the statements of the engines it is given: slower than `slow_ms` (warning `slow_sql`), or all of them
    (debug `sql`). `configure` switches while running (the log-level API does, for a period)."""

    def __init__(self) -> None:
        self._engines: list[Any] = []
        self.slow_ms = 0.0
        self.log_all = False
        self._attached = False

    def watch(self, engine: AsyncEngine) -> None:
        """Log this engine's statements too (and those of option engines sharing its pool)."""
        target = engine.sync_engine
        if target not in self._engines:
            self._engines.append(target)
            if self._attached:
                self._attach(target)

    @property
    def enabled(self) -> bool:
        """Whether anything is logged (and so the hooks are attached)."""
        return self.slow_ms > 0 or self.log_all

    @property
    def attached(self) -> bool:
        """Whether the hooks are on the engines now."""
        return self._attached

    def configure(self, *, slow_ms: float, log_all: bool) -> None:
        """Switch: a threshold in milliseconds (0: off) and whether every statement is logged."""
        self.slow_ms, self.log_all = max(slow_ms, 0.0), log_all
        if self.enabled and not self._attached:
            for target in self._engines:
                self._attach(target)
            self._attached = True
        elif not self.enabled and self._attached:
            for target in self._engines:
                event.remove(target, "before_cursor_execute", self._before)
                event.remove(target, "after_cursor_execute", self._after)
            self._attached = False

    def close(self) -> None:
        """Detach from every engine."""
        self.configure(slow_ms=0, log_all=False)
        self._engines.clear()

    def _attach(self, target: Any) -> None:
        event.listen(target, "before_cursor_execute", self._before)
        event.listen(target, "after_cursor_execute", self._after)

    def _before(self, conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info[_STARTED_KEY] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, many: bool) -> None:
        started = conn.info.pop(_STARTED_KEY, None)
        if started is None:
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        if self.slow_ms > 0 and elapsed_ms >= self.slow_ms:
            log.warning(
                "slow_sql",
                statement=_text(statement),
                duration_ms=round(elapsed_ms, 3),
                threshold_ms=self.slow_ms,
                executemany=many,
            )
        elif self.log_all:
            log.debug("sql", statement=_text(statement), duration_ms=round(elapsed_ms, 3), executemany=many)
