"""The PostgreSQL side of backups: consistent dumps, row counts, restores, and scratch databases.

`pg_dump -Fc` runs on a snapshot exported by a REPEATABLE READ transaction that counts the rows and stays open
until the dump ends, so counts and dump agree exactly. Restores go through `pg_restore` piped into `psql`, in
one transaction: a failure leaves the database as it was. The password reaches the tools through PGPASSWORD,
never their command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from gatehouse.backups.errors import BackupToolFailed, BackupToolMissing, BackupVerifyNeedsCreatedb
from gatehouse.backups.snapshot import VERSION_TABLE, Progress, Snapshot

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
        raise BackupToolMissing(
            f"{', '.join(missing)} not found in PATH: install the PostgreSQL client tools (e.g. `apt-get install "
            "postgresql-client`), of the server's major version or newer",
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
    script, restore_stderr, psql_stdin, psql_stderr = restore.stdout, restore.stderr, psql.stdin, psql.stderr
    if script is None or restore_stderr is None or psql_stdin is None or psql_stderr is None:
        raise RuntimeError("pg_restore or psql started without its pipes")  # each was asked for: never happens

    async def feed(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            sink.write(b"BEGIN;\n" + _PG_CLEAR_SCHEMA.encode())
            held = b""
            while chunk := await source.read(256 * 1024):
                sink.write(held)
                await sink.drain()
                held = chunk
            if await restore.wait() == 0:
                sink.write(held)
                await sink.drain()
            sink.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # psql stopped at an error: its exit code and stderr tell which

    try:
        _, restore_err, psql_err = await asyncio.gather(
            feed(script, psql_stdin), restore_stderr.read(), psql_stderr.read()
        )
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
                    raise BackupVerifyNeedsCreatedb(
                        "Verifying a PostgreSQL backup restores it into a scratch database: give Gatehouse's role "
                        "CREATEDB (`ALTER ROLE ... CREATEDB`), or verify where it has it"
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
    if proc.stderr is None:
        raise RuntimeError(f"{Path(args[0]).name} started without its stderr pipe")  # it was asked for: never happens
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
