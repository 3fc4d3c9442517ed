"""Where the hot path's two statements (the quota reservation and its settlement) run.

They are single atomic statements, built once with SQLAlchemy (limits/quotas.py) and compiled once per
dialect here. Three ways to run them:

- `EngineStore`: through an SQLAlchemy autocommit engine; the reference, and what PostgreSQL uses unless
  asyncpg can be reached directly.
- `SqliteStore`: one plain `sqlite3` connection used on the event loop's own thread. An autocommit UPDATE
  on a WAL database takes about 15 µs; handing it to aiosqlite's thread costs 0.4 ms and, under load, the
  GIL hand-over between threads far more. The connection never waits inside SQLite (busy_timeout=0): when
  another connection holds the write lock the statement is retried after an asyncio sleep, so the loop
  keeps serving (and the writer holding the lock can finish). It never checkpoints by itself either; a
  background thread does, so the loop never copies WAL pages or fsyncs.
- `AsyncpgStore`: asyncpg connections of their own with prepared statements, no SQLAlchemy layer.

Errors come out as SQLAlchemy's exceptions (`DBAPIError.instance`), as from any engine, so the error
handlers that turn an unreachable database into a 503 keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import observe_statement, statement_kind
from gatehouse.db.errors import is_storage_full, storage_full

log = get_logger("gatehouse.db")
T = TypeVar("T")
BUSY_TIMEOUT_SECONDS = 30.0  # as long as the engines' busy_timeout: then the statement fails
CHECKPOINT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement compiled for one dialect: positional SQL and how to turn named values into its arguments."""

    sql: str
    kind: str
    names: tuple[str, ...]
    defaults: dict[str, Any]  # the statement's literal values (e.g. `messages=0`), bound like the others
    processors: tuple[Any, ...]  # a bind processor per position, or None
    pairs: tuple[tuple[str, Any], ...]  # (name, processor) per position

    def arguments(self, params: dict[str, Any]) -> tuple[Any, ...]:
        values = {**self.defaults, **params} if self.defaults else params
        # A list comprehension over precomputed pairs: on the hot path, a generator fed to tuple() cost twice as much.
        return tuple([values[name] if process is None else process(values[name]) for name, process in self.pairs])


def compile_statement(statement: Executable, dialect: Dialect, column_keys: list[str] | None = None) -> Compiled:
    """Compile once: the SQL text with positional placeholders, and each parameter's bind processor."""
    if not isinstance(statement, ClauseElement):
        raise TypeError(f"not a SQL statement: {type(statement).__name__}")
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"{type(statement).__name__} did not compile to SQL")
    names = tuple(compiled.positiontup or ())
    processors, defaults = [], {}
    for name in names:
        bind = compiled.binds[name]
        processors.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
        if not bind.required:
            defaults[name] = bind.effective_value
    return Compiled(
        compiled.string,
        statement_kind(compiled.string),
        names,
        defaults,
        tuple(processors),
        tuple(zip(names, processors, strict=True)),
    )


class StatementStore:
    """Runs a prepared statement with named parameters; returns the first column of the first row, if any."""

    dialect_name: str
    engine: AsyncEngine  # the autocommit engine behind it, for the rare statements that need no speed
    # Called with each statement's SQL by stores that bypass SQLAlchemy's engine events (for tests).
    trace: Callable[[str], None] | None = None

    async def start(self) -> None:
        """Open connections (when the store has its own)."""

    async def close(self) -> None:
        """Close them."""

    async def scalar(self, statement: Executable, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def chain(self, first: Executable, then: Executable, params: dict[str, Any]) -> Any:
        """Run `first`, and when it returns a row run `then` too (with `p_prev` bound to that row's first column),
        in one transaction; returns `first`'s value. For databases whose statements cannot do both at once
        (SQLite has no data-modifying CTE: on PostgreSQL the quotas use one statement instead)."""
        raise NotImplementedError

    async def many(self, statement: Executable, rows: list[dict[str, Any]]) -> None:
        """Run `statement` once per row of named values, all in one transaction (background batches)."""
        raise NotImplementedError


class EngineStore(StatementStore):
    """Through an SQLAlchemy engine (in autocommit, see db.engine.create_autocommit_engine)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect_name = engine.dialect.name

    async def scalar(self, statement: Executable, params: dict[str, Any]) -> Any:
        async with self.engine.connect() as conn:
            result = await conn.execute(statement, params)
            return result.scalar_one_or_none() if result.returns_rows else None

    async def chain(self, first: Executable, then: Executable, params: dict[str, Any]) -> Any:
        async with self.engine.connect() as conn:
            # The engine is in autocommit: the transaction is opened and ended by hand.
            await conn.exec_driver_sql("BEGIN IMMEDIATE" if self.dialect_name == "sqlite" else "BEGIN")
            try:
                value = (await conn.execute(first, params)).scalar_one_or_none()
                if value is not None:
                    await conn.execute(then, {**params, "p_prev": value})
                await conn.exec_driver_sql("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.exec_driver_sql("ROLLBACK")
                raise
            return value

    async def many(self, statement: Executable, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("BEGIN IMMEDIATE" if self.dialect_name == "sqlite" else "BEGIN")
            try:
                await conn.execute(statement, rows)
                await conn.exec_driver_sql("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.exec_driver_sql("ROLLBACK")
                raise


class CompilingStore(StatementStore):
    """A store that runs statements itself, bypassing SQLAlchemy's execution: each compiled once."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._compiled: dict[int, Compiled] = {}

    def _compile(self, statement: Executable) -> Compiled:
        compiled = self._compiled.get(id(statement))
        if compiled is None:
            compiled = self._compiled[id(statement)] = compile_statement(statement, self.dialect)
        return compiled


class SqliteStore(CompilingStore):
    """One `sqlite3` connection on the event loop's thread (see the module docstring)."""

    dialect_name = "sqlite"

    def __init__(self, engine: AsyncEngine) -> None:
        database = engine.url.database
        if not database or database == ":memory:":
            raise ValueError("SqliteStore needs a database file")
        super().__init__(engine)
        self.path = database
        self._inserts: dict[tuple[str, tuple[str, ...]], Compiled] = {}
        self._conn: sqlite3.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._written = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA busy_timeout=0")  # never wait inside SQLite: that would block the loop
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA wal_autocheckpoint=0")  # the background checkpoint does it, off the loop
            except sqlite3.Error as exc:
                raise self._error("connect", (), exc) from exc
            self._conn = conn
        elif self._conn.in_transaction:
            # Never expected (every path below ends its transaction), but a statement must never run inside a
            # transaction left open: its writes would stay invisible and hold the write lock.
            self._conn.execute("ROLLBACK")
        return self._conn

    def _error(self, sql: str, arguments: Any, exc: sqlite3.Error) -> Exception:
        """sqlite3's error as the engines report it: StorageFull for a full disk, else SQLAlchemy's."""
        if is_storage_full(exc):
            return storage_full(self.engine.url)
        return DBAPIError.instance(sql, arguments, exc, sqlite3.Error)

    async def start(self) -> None:
        self._connection()
        self._checkpoints = asyncio.create_task(self._checkpoint_loop(), name="sqlite-checkpoint")

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _unlocked(self, run: Callable[[], T], sql: str, arguments: Any) -> tuple[T, float]:
        """`run()` (one sqlite3 call) and how long its successful attempt took. While another connection (a
        batch writer, an admin change, another worker) holds the write lock it is retried after an asyncio sleep,
        for up to BUSY_TIMEOUT_SECONDS; sqlite3's errors come out as SQLAlchemy's."""
        delay, deadline = 0.0002, 0.0
        while True:
            started = time.perf_counter()
            try:
                return run(), time.perf_counter() - started
            except sqlite3.OperationalError as exc:
                now = time.monotonic()
                deadline = deadline or now + BUSY_TIMEOUT_SECONDS
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or now > deadline:
                    raise self._error(sql, arguments, exc) from exc
            except sqlite3.Error as exc:
                raise self._error(sql, arguments, exc) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def scalar(self, statement: Executable, params: dict[str, Any]) -> Any:
        compiled = self._compile(statement)
        arguments = compiled.arguments(params)
        conn = self._connection()
        # fetchall() steps the statement to its end, which is what commits it (RETURNING rows too).
        rows, elapsed = await self._unlocked(
            lambda: conn.execute(compiled.sql, arguments).fetchall(), compiled.sql, arguments
        )
        observe_statement(compiled.kind, elapsed)
        if self.trace is not None:
            self.trace(compiled.sql)
        self._written = True
        return rows[0][0] if rows else None

    async def chain(self, first: Executable, then: Executable, params: dict[str, Any]) -> Any:
        head, tail = self._compile(first), self._compile(then)
        conn = self._connection()

        def run() -> Any:
            rows = conn.execute(head.sql, head.arguments(params)).fetchall()
            if rows:
                conn.execute(tail.sql, tail.arguments({**params, "p_prev": rows[0][0]})).fetchall()
            return rows[0][0] if rows else None

        value = await self._transaction(run, head.sql, head.kind)
        if self.trace is not None:
            self.trace(head.sql)
            if value is not None:
                self.trace(tail.sql)
        return value

    async def many(self, statement: Executable, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        compiled = self._compile(statement)
        await self._many(compiled, [compiled.arguments(row) for row in rows])

    async def insert_many(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert rows that all carry the same columns, in one transaction on this connection (the request-log
        writer's batches: through aiosqlite they held the write lock across several loop turns, and quota
        statements arriving meanwhile had to wait)."""
        keys = tuple(rows[0])
        compiled = self._inserts.get((table.name, keys))
        if compiled is None:
            compiled = compile_statement(insert(table), self.dialect, column_keys=list(keys))
            self._inserts[(table.name, keys)] = compiled
        pairs = tuple(zip(compiled.names, compiled.processors, strict=True))
        await self._many(compiled, [tuple([row[n] if p is None else p(row[n]) for n, p in pairs]) for row in rows])

    async def _many(self, compiled: Compiled, arguments: list[tuple[Any, ...]]) -> None:
        conn = self._connection()
        await self._transaction(lambda: conn.executemany(compiled.sql, arguments), compiled.sql, compiled.kind)
        if self.trace is not None:
            self.trace(compiled.sql)

    async def _transaction(self, run: Callable[[], T], sql: str, kind: str) -> T:
        """`run()` (plain sqlite3 calls, no await in between) inside BEGIN IMMEDIATE ... COMMIT on this connection:
        the write lock is taken first (retried after asyncio sleeps while another connection holds it), so nothing
        inside waits."""
        conn = self._connection()
        await self._unlocked(lambda: conn.execute("BEGIN IMMEDIATE"), "BEGIN IMMEDIATE", ())
        started = time.perf_counter()
        try:
            value = run()
            conn.execute("COMMIT")
        except BaseException as exc:  # not only sqlite3.Error: a value it cannot bind (OverflowError...) too
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(sql, (), exc) from exc
            raise
        observe_statement(kind, time.perf_counter() - started)
        self._written = True
        return value

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            if not self._written:
                continue
            self._written = False
            try:
                await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error as exc:
                log.warning("sqlite_checkpoint_failed", error=str(exc))

    def _checkpoint(self) -> None:
        # Its own short-lived connection: a passive checkpoint copies what no reader still needs, never waits.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=1)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()


class AsyncpgStore(CompilingStore):
    """asyncpg connections taken once from the engine's pool and used directly: a prepared statement and one
    round trip per call, without SQLAlchemy's execution layer (about 0.2 ms a call on this kind of machine).

    A connection that breaks is invalidated and replaced at the next call; the error comes out as
    SQLAlchemy's OperationalError, which the app answers with 503 database_unavailable.
    """

    dialect_name = "postgresql"

    def __init__(self, engine: AsyncEngine, *, size: int) -> None:
        super().__init__(engine)
        self.size = size
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._held: list[Any] = []  # the engine's connections we took, to give back at close
        self._broken: tuple[type[BaseException], ...] = (OSError,)
        self._failed: type[BaseException] = Exception

    async def start(self) -> None:
        import asyncpg  # here, not at the top: a process on SQLite never needs it (a tenth of a second to import)

        self._broken = (
            OSError,
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
            # "cannot switch to state ...; another operation is in progress": the server dropped the connection
            # mid-conversation (a restart) and asyncpg's state machine cannot leave that state.
            asyncpg.InternalClientError,
        )
        self._failed = asyncpg.PostgresError
        for _ in range(self.size):
            self._idle.put_nowait(None)  # a free slot; connected at its first use

    async def close(self) -> None:
        for conn in self._held:
            with contextlib.suppress(Exception):
                await conn.close()
        self._held.clear()

    async def _connect(self) -> Any:
        conn = await self.engine.connect()
        self._held.append(conn)
        raw = await conn.get_raw_connection()
        return conn, raw.driver_connection

    async def scalar(self, statement: Executable, params: dict[str, Any]) -> Any:
        compiled = self._compile(statement)
        arguments = compiled.arguments(params)
        slot = await self._idle.get()
        try:
            if slot is None:
                slot = await self._connect()
            started = time.perf_counter()
            try:
                value = await slot[1].fetchval(compiled.sql, *arguments)
            except self._broken as exc:
                broken, slot = slot, None
                self._held.remove(broken[0])
                with contextlib.suppress(Exception):
                    await broken[0].invalidate()
                raise OperationalError(compiled.sql, arguments, exc) from exc
            except self._failed as exc:
                if is_storage_full(exc):
                    raise storage_full(self.engine.url) from exc
                raise DBAPIError(compiled.sql, arguments, exc) from exc
            observe_statement(compiled.kind, time.perf_counter() - started)
            if self.trace is not None:
                self.trace(compiled.sql)
            return value
        finally:
            self._idle.put_nowait(slot)

    async def many(self, statement: Executable, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        compiled = self._compile(statement)
        arguments = [compiled.arguments(row) for row in rows]
        slot = await self._idle.get()
        try:
            if slot is None:
                slot = await self._connect()
            started = time.perf_counter()
            try:
                # asyncpg's executemany runs in one implicit transaction and pipelines the rows.
                await slot[1].executemany(compiled.sql, arguments)
            except self._broken as exc:
                broken, slot = slot, None
                self._held.remove(broken[0])
                with contextlib.suppress(Exception):
                    await broken[0].invalidate()
                raise OperationalError(compiled.sql, arguments[:1], exc) from exc
            except self._failed as exc:
                if is_storage_full(exc):
                    raise storage_full(self.engine.url) from exc
                raise DBAPIError(compiled.sql, arguments[:1], exc) from exc
            observe_statement(compiled.kind, time.perf_counter() - started)
        finally:
            self._idle.put_nowait(slot)


def create_store(engine: AsyncEngine, *, size: int = 4) -> StatementStore:
    """The fastest store this database allows."""
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        return SqliteStore(engine)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
        return AsyncpgStore(engine, size=size)
    return EngineStore(engine)
