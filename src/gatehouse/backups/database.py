"""The database side of backups (ops/backup.py): consistent copies, row counts, and restores.

SQLite: the sqlite3 backup API copies the live file page by page from inside one read transaction, so the
copy is one snapshot however much is written meanwhile (in WAL mode readers and writers do not block each
other), and the rows are counted from the copy. PostgreSQL: `pg_dump -Fc` runs on a snapshot exported by a
REPEATABLE READ transaction that counts the rows and stays open until the dump ends, so counts and dump
agree exactly. Restores go through `pg_restore` piped into `psql`, in one transaction: a failure leaves the
database as it was. The password reaches the tools through PGPASSWORD, never their command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from gatehouse.errors import GatehouseError, Unavailable

Progress = Callable[[int, int | None], None]
SQLITE_STEP_PAGES = 256  # pages copied per step of the backup API: about 1 MiB, so progress moves smoothly
VERSION_TABLE = "alembic_version"

# Run first in the restore's transaction: drop what the current schema holds (the dump recreates it), waiting
# at most 30 s for locks that serving processes hold (then the restore fails and nothing changed).
# Table by table rather than DROP SCHEMA, which needs the schema's owner (not always Gatehouse's role).
_PG_CLEAR_SCHEMA = """
SET client_min_messages = error;
SET lock_timeout = '30s';
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') LOOP
    EXECUTE format('DROP %s IF EXISTS %I.%I CASCADE',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                     WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, current_schema(), r.relname);
  END LOOP;
  FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = current_schema() AND t.typtype IN ('e', 'd', 'r') LOOP
    EXECUTE format('DROP TYPE IF EXISTS %I.%I CASCADE', current_schema(), r.typname);
  END LOOP;
END $$;
"""


class BackupToolFailed(GatehouseError):
    """pg_dump, pg_restore or psql failed; the message carries the end of what it printed."""

    code = "backup_tool_failed"


@dataclass(frozen=True)
class Snapshot:
    """What a database (or a copy of one) holds: its migration revision(s) and the rows of each table."""

    revision: tuple[str, ...]
    rows: dict[str, int]


# --- SQLite ---------------------------------------------------------------------------------------------


def sqlite_path(database_url: str) -> Path:
    """The file of a SQLite DATABASE_URL."""
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise GatehouseError("An in-memory SQLite database cannot be backed up: set DATABASE_URL to a file")
    return Path(database)


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
    else:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SqliteFailed(GatehouseError):
    """SQLite refused (locked for too long, disk full, not a database): its message, in one line."""

    code = "backup_sqlite_failed"


@contextmanager
def _sqlite_errors(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise SqliteFailed(f"{what}: SQLite says {exc}") from exc


def sqlite_copy(live: Path, target: Path, *, progress: Progress | None = None) -> Snapshot:
    """Copy the live database into `target` (a new file) as one snapshot, and count the copy's rows."""
    if not live.exists():
        raise GatehouseError(f"The SQLite database {live} does not exist: check DATABASE_URL")
    with _sqlite_errors(f"Copying {live} failed"):
        return _sqlite_copy(live, target, progress)


def _sqlite_copy(live: Path, target: Path, progress: Progress | None) -> Snapshot:
    source = _connect(live)
    copy = sqlite3.connect(target, isolation_level=None)
    try:
        page_size = source.execute("PRAGMA page_size").fetchone()[0]
        # An open read transaction pins one snapshot for every step of the copy: without it, a write by the
        # server between two steps would restart the copy (and under steady load it might never finish).
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()

        def step(_status: int, remaining: int, total: int) -> None:
            if progress:
                progress((total - remaining) * page_size, total * page_size)

        source.backup(copy, pages=SQLITE_STEP_PAGES, progress=step)
        source.execute("ROLLBACK")
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        return _sqlite_snapshot(copy)
    finally:
        copy.close()
        source.close()


def sqlite_inspect(path: Path) -> tuple[Snapshot, list[str]]:
    """Revision and row counts of a database file, and what `PRAGMA integrity_check` finds wrong."""
    try:
        conn = _connect(path, read_only=True)
        try:
            found = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            problems = [] if found == ["ok"] else [f"integrity check: {line}" for line in found[:10]]
            return _sqlite_snapshot(conn), problems
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Snapshot((), {}), [f"it is not a readable SQLite database ({exc})"]


def sqlite_counts(path: Path) -> Snapshot:
    """Revision and row counts of the live database."""
    with _sqlite_errors(f"Counting the rows of {path} failed"):
        conn = _connect(path)
        try:
            return _sqlite_snapshot(conn)
        finally:
            conn.close()


def sqlite_has_tables(path: Path) -> bool:
    """Whether the database file exists and holds any table (an empty one needs no safety backup)."""
    if not path.exists():
        return False
    with _sqlite_errors(f"Reading {path} failed"):
        return _sqlite_tables(path) > 0


def _sqlite_tables(path: Path) -> int:
    conn = _connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])
    finally:
        conn.close()


def sqlite_restore(copy: Path, live: Path) -> None:
    """Replace the live database's content with `copy`'s, in one write transaction (safe with WAL and open readers)."""
    live.parent.mkdir(parents=True, exist_ok=True)
    with _sqlite_errors(f"Restoring into {live} failed"):
        source = _connect(copy, read_only=True)
        target = _connect(live)
        try:
            source.backup(target)  # all pages in one step: readers see the old database or the new one, not a mix
        finally:
            target.close()
            source.close()


def _sqlite_snapshot(conn: sqlite3.Connection) -> Snapshot:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    revision: tuple[str, ...] = ()
    if VERSION_TABLE in tables:
        revision = tuple(sorted(row[0] for row in conn.execute("SELECT version_num FROM alembic_version")))
    rows = {
        table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # noqa: S608 (names from the catalog)
        for table in tables
        if table != VERSION_TABLE
    }
    return Snapshot(revision, rows)


# --- PostgreSQL -----------------------------------------------------------------------------------------


def libpq_environment(database_url: str, *, database: str | None = None) -> dict[str, str]:
    """The environment for pg_dump / pg_restore / psql: the URL's connection in PG* variables, the password
    included. What the URL leaves out (a host, a password) comes from the inherited PG* variables or
    ~/.pgpass, as it does for the server's own connections (asyncpg reads them too)."""
    url = make_url(database_url)
    env = dict(os.environ)
    host = url.query.get("host")
    if isinstance(host, str) or url.host:
        env["PGHOST"] = str(host if isinstance(host, str) else url.host)
    if url.port:
        env["PGPORT"] = str(url.port)
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = url.password
    if database or url.database:
        env["PGDATABASE"] = str(database or url.database)
    ssl = url.query.get("ssl")
    if isinstance(ssl, str):
        env["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(ssl.lower(), ssl)
    env["PGAPPNAME"] = "gatehouse-backup"
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return env


def require_tools(*names: str) -> dict[str, str]:
    """The path of each PostgreSQL client tool, or an error saying what to install."""
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise Unavailable(
            f"{', '.join(missing)} not found in PATH: install the PostgreSQL client tools (e.g. `apt-get install "
            "postgresql-client`), of the server's major version or newer",
            code="backup_tool_missing",
        )
    return {name: path for name, path in found.items() if path is not None}


def _engine_url(database_url: str, database: str | None = None) -> URL:
    url = make_url(database_url)
    return url.set(database=database) if database else url


async def _pg_snapshot(conn: AsyncConnection) -> Snapshot:
    tables = [
        row[0]
        for row in await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")
        )
    ]
    revision: tuple[str, ...] = ()
    if VERSION_TABLE in tables:
        result = await conn.execute(text("SELECT version_num FROM alembic_version"))
        revision = tuple(sorted(row[0] for row in result))
    rows: dict[str, int] = {}
    for table in tables:
        if table != VERSION_TABLE:
            quoted = '"' + table.replace('"', '""') + '"'
            rows[table] = int((await conn.execute(text(f"SELECT count(*) FROM {quoted}"))).scalar_one())  # noqa: S608
    return Snapshot(revision, rows)


async def pg_counts(database_url: str, *, database: str | None = None) -> Snapshot:
    """Revision and row counts of a PostgreSQL database, read in one snapshot."""
    engine = create_async_engine(_engine_url(database_url, database), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            return await _pg_snapshot(conn)
    finally:
        await engine.dispose()


async def pg_has_tables(database_url: str) -> bool:
    """Whether the database holds any table in its schema (an empty one needs no safety backup)."""
    engine = create_async_engine(_engine_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            query = text("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            return int((await conn.execute(query)).scalar_one()) > 0
    finally:
        await engine.dispose()


async def pg_dump(database_url: str, target: Path, *, progress: Progress | None = None) -> Snapshot:
    """`pg_dump -Fc` into `target`, on the same snapshot as the row counts returned."""
    tools = require_tools("pg_dump")
    engine = create_async_engine(_engine_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            async with conn.begin():
                snapshot_id = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
                counted = await _pg_snapshot(conn)
                # The transaction stays open until pg_dump is done: the exported snapshot lives as long as it.
                await _run(
                    [tools["pg_dump"], "-Fc", "--no-owner", f"--snapshot={snapshot_id}", "-f", str(target)],
                    libpq_environment(database_url),
                    watch=target,
                    progress=progress,
                )
        return counted
    finally:
        await engine.dispose()


async def pg_restore(database_url: str, dump: Path, *, database: str | None = None) -> None:
    """Replace the schema's content with the dump's, in one transaction: on failure nothing changes.

    psql gets BEGIN, the statements that empty the schema, then `pg_restore --single-transaction`'s script,
    whose last lines hold its COMMIT. Those are held back until pg_restore has exited successfully, so a dump
    that cannot be read to its end never commits: psql reaches the end of its input inside the transaction,
    and PostgreSQL rolls it back when psql disconnects.
    """
    tools = require_tools("pg_restore", "psql")
    env = libpq_environment(database_url, database=database)
    restore = await asyncio.create_subprocess_exec(
        tools["pg_restore"],
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "-f",
        "-",
        str(dump),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    psql = await asyncio.create_subprocess_exec(
        tools["psql"],
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert restore.stdout is not None
    assert restore.stderr is not None
    assert psql.stdin is not None
    assert psql.stderr is not None

    async def feed() -> None:
        assert restore.stdout is not None
        assert psql.stdin is not None
        try:
            psql.stdin.write(b"BEGIN;\n" + _PG_CLEAR_SCHEMA.encode())
            held = b""
            while chunk := await restore.stdout.read(256 * 1024):
                psql.stdin.write(held)
                await psql.stdin.drain()
                held = chunk
            if await restore.wait() == 0:
                psql.stdin.write(held)
                await psql.stdin.drain()
            psql.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # psql stopped at an error: its exit code and stderr tell which

    try:
        _, restore_err, psql_err = await asyncio.gather(feed(), restore.stderr.read(), psql.stderr.read())
        restore_code, psql_code = await restore.wait(), await psql.wait()
    finally:
        for proc in (restore, psql):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    if restore_code != 0:
        raise BackupToolFailed(f"pg_restore failed, nothing was committed: {_last_lines(restore_err)}")
    if psql_code != 0:
        raise BackupToolFailed(f"psql failed, nothing was committed: {_last_lines(psql_err)}")


async def pg_readable(dump: Path) -> str | None:
    """Read a dump to its end without restoring it (`pg_restore -f /dev/null`): None, or what is wrong."""
    tools = require_tools("pg_restore")
    proc = await asyncio.create_subprocess_exec(
        tools["pg_restore"],
        "-f",
        os.devnull,
        str(dump),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await proc.communicate()
    return None if proc.returncode == 0 else f"pg_restore cannot read it: {_last_lines(errors)}"


@asynccontextmanager
async def pg_scratch_database(database_url: str) -> AsyncIterator[str]:
    """A new empty database on the same server (dropped afterwards, whatever happens): its name."""
    name = f"gatehouse_verify_{secrets.token_hex(6)}"
    engine = create_async_engine(_engine_url(database_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            try:
                await conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
            except Exception as exc:
                if "permission denied" in str(exc):
                    raise GatehouseError(
                        "Verifying a PostgreSQL backup restores it into a scratch database: give Gatehouse's role "
                        "CREATEDB (`ALTER ROLE ... CREATEDB`), or verify where it has it",
                        code="backup_verify_needs_createdb",
                    ) from exc
                raise
        try:
            yield name
        finally:
            async with engine.connect() as conn:
                version = int((await conn.execute(text("SHOW server_version_num"))).scalar_one())
                force = " WITH (FORCE)" if version >= 130000 else ""
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"{force}'))
    finally:
        await engine.dispose()


async def _run(args: list[str], env: dict[str, str], *, watch: Path, progress: Progress | None) -> None:
    """Run a tool to its end; report the size of `watch` as it grows; a failure raises with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(errors), timeout=0.25)
                break
            except TimeoutError:
                if progress:
                    with contextlib.suppress(OSError):
                        progress(os.stat(watch).st_size, None)
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if code != 0:
        raise BackupToolFailed(f"{Path(args[0]).name} failed (exit {code}): {_last_lines(errors.result())}")


def _last_lines(stderr: bytes, count: int = 3) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " / ".join(lines[-count:]) or "no message"
