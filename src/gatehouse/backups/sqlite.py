"""The SQLite side of backups: consistent copies, row counts, and restores.

The sqlite3 backup API copies the live file page by page from inside one read transaction, so the copy is one
snapshot however much is written meanwhile (in WAL mode readers and writers do not block each other), and the
rows are counted from the copy. A restore copies every page back in one write transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from gatehouse.backups.errors import BackupSqliteFailed
from gatehouse.backups.snapshot import VERSION_TABLE, Progress, Snapshot
from gatehouse.errors import GatehouseError

SQLITE_STEP_PAGES = 256  # pages copied per step of the backup API: about 1 MiB, so progress moves smoothly


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


@contextmanager
def _sqlite_errors(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise BackupSqliteFailed(f"{what}: SQLite says {exc}") from exc


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
