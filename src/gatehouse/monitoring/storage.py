"""Storage: how big the database, the backups and the logs are, and how much disk is left where they live.

One collection (`collect`) serves `gatehouse db stats`, the `storage` section of GET /admin/health and the gauges
(`StorageGauges`, refreshed off the request path every STORAGE_REFRESH_SECONDS). File sizes are walked in a
thread; the database is asked with catalogue queries (SQLite's pragmas and dbstat, PostgreSQL's statistics
views), which read no table.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import BACKUP_DIR_SIZE, DATABASE_SIZE, DISK_FREE, DISK_TOTAL, LOG_DIR_SIZE
from gatehouse.core.tasks import every, logged
from gatehouse.core.tasks import stop as stop_task
from gatehouse.settings import Settings

log = get_logger("gatehouse.storage")
LARGEST_TABLES = 10
MB = 1024 * 1024
DiskLabel = Literal["data", "backups", "logs"]  # the metrics' `path` label
MANIFEST_SUFFIX = ".json"  # each backup in BACKUP_DIR has exactly one manifest (backups/manifest.py)


@dataclass(frozen=True)
class TableSize:
    """One table: its bytes (PostgreSQL: with indexes and TOAST), its indexes' bytes, and its rows (an estimate on
    PostgreSQL, from the planner's statistics; counted on SQLite)."""

    name: str
    total_bytes: int
    index_bytes: int | None
    rows: int | None
    dead_rows: int | None = None  # PostgreSQL: dead tuples waiting for VACUUM


@dataclass(frozen=True)
class DatabaseSize:
    """The database's size and its largest tables; SQLite's files and pages, or PostgreSQL's dead tuples."""

    kind: str
    size_bytes: int
    tables: list[TableSize]
    file: str | None = None  # SQLite: the main file, then its WAL and shared-memory files
    file_bytes: int | None = None
    wal_bytes: int | None = None
    shm_bytes: int | None = None
    page_size: int | None = None
    page_count: int | None = None
    freelist_pages: int | None = None  # pages a VACUUM would give back to the disk
    dead_rows: int | None = None  # PostgreSQL: dead tuples over all tables


@dataclass(frozen=True)
class Directory:
    """A directory's files: how many and their bytes; `backups` counts backups (by their manifests)."""

    path: str | None
    files: int
    bytes: int
    backups: int | None = None


@dataclass(frozen=True)
class Disk:
    """The disk a path lives on, as its user sees it (free: what a non-root writer may still use)."""

    label: DiskLabel
    path: str
    free_bytes: int
    total_bytes: int
    free_percent: float
    status: Literal["ok", "warn"]
    reason: str | None


@dataclass(frozen=True)
class StorageReport:
    """Everything `gatehouse db stats` shows; `status` is warn when a disk is low."""

    status: Literal["ok", "warn"]
    database: DatabaseSize
    backups: Directory
    logs: Directory
    disks: list[Disk] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As JSON (`--json`, the health report)."""
        return asdict(self)


# --- the database ------------------------------------------------------------------------------------


def sqlite_path(database_url: str) -> Path | None:
    """The SQLite file of DATABASE_URL (None: PostgreSQL, or an in-memory database)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def _scalar(conn: AsyncConnection, sql: str) -> int:
    return int((await conn.execute(text(sql))).scalar_one() or 0)


async def _sqlite_size(conn: AsyncConnection, path: Path | None, largest: int) -> DatabaseSize:
    page_size = await _scalar(conn, "PRAGMA page_size")
    page_count = await _scalar(conn, "PRAGMA page_count")
    freelist = await _scalar(conn, "PRAGMA freelist_count")
    tables = await _sqlite_tables(conn, largest)
    if path is None:
        return DatabaseSize(
            kind="sqlite",
            size_bytes=page_size * page_count,
            tables=tables,
            page_size=page_size,
            page_count=page_count,
            freelist_pages=freelist,
        )
    sizes = await asyncio.to_thread(
        lambda: [_file_size(path), _file_size(Path(f"{path}-wal")), _file_size(Path(f"{path}-shm"))]
    )
    return DatabaseSize(
        kind="sqlite",
        size_bytes=sum(sizes),
        tables=tables,
        file=str(path),
        file_bytes=sizes[0],
        wal_bytes=sizes[1],
        shm_bytes=sizes[2],
        page_size=page_size,
        page_count=page_count,
        freelist_pages=freelist,
    )


async def _sqlite_tables(conn: AsyncConnection, largest: int) -> list[TableSize]:
    """Per table, its pages and its indexes' pages (the dbstat virtual table, compiled into Python's SQLite; it
    reads every page, so only `gatehouse db stats` asks for tables)."""
    if largest <= 0:
        return []
    rows = (
        await conn.execute(
            text(
                "SELECT m.name, m.type, m.tbl_name, SUM(s.pgsize) FROM dbstat AS s "
                "JOIN sqlite_schema AS m ON m.name = s.name GROUP BY m.name"
            )
        )
    ).all()
    own: dict[str, int] = {}
    indexes: dict[str, int] = {}
    for name, kind, table, size in rows:
        if kind == "table":
            own[name] = own.get(name, 0) + int(size)
        else:
            indexes[table] = indexes.get(table, 0) + int(size)
    ranked = sorted(own, key=lambda name: own[name] + indexes.get(name, 0), reverse=True)[:largest]
    found = []
    for name in ranked:
        quoted = name.replace('"', '""')
        count = await _scalar(conn, f'SELECT COUNT(*) FROM "{quoted}"')  # noqa: S608 (a name from the schema)
        found.append(TableSize(name, own[name] + indexes.get(name, 0), indexes.get(name, 0), count))
    return found


async def _postgres_size(conn: AsyncConnection, largest: int) -> DatabaseSize:
    size = await _scalar(conn, "SELECT pg_database_size(current_database())")
    if largest <= 0:
        return DatabaseSize(kind="postgresql", size_bytes=size, tables=[])
    rows = (
        await conn.execute(
            text(
                "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid), "
                "GREATEST(c.reltuples, 0)::bigint, COALESCE(s.n_dead_tup, 0) "
                "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() "
                "ORDER BY pg_total_relation_size(c.oid) DESC"
            )
        )
    ).all()
    tables = [
        TableSize(name, int(total), int(index), int(estimate), int(dead)) for name, total, index, estimate, dead in rows
    ]
    return DatabaseSize(
        kind="postgresql", size_bytes=size, tables=tables[:largest], dead_rows=sum(t.dead_rows or 0 for t in tables)
    )


async def database_size(engine: AsyncEngine, database_url: str, *, largest: int = LARGEST_TABLES) -> DatabaseSize:
    """The database's size, its largest tables and, per backend, what a maintenance run would act on."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return await _sqlite_size(conn, sqlite_path(database_url), largest)
        return await _postgres_size(conn, largest)


# --- files and disks ---------------------------------------------------------------------------------


def _walk(directory: Path, name_prefix: str | None = None) -> Directory:
    files = size = backups = 0
    if directory.is_dir():
        for root, _dirs, names in os.walk(directory):
            for name in names:
                if name_prefix is not None and (root != str(directory) or not name.startswith(name_prefix)):
                    continue
                try:
                    size += os.lstat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    continue  # deleted while we walked (a rotation, the backups' pruning)
                files += 1
                backups += root == str(directory) and name.endswith(MANIFEST_SUFFIX)
    return Directory(str(directory), files, size, backups)


def backup_directory(settings: Settings) -> Directory:
    """BACKUP_DIR: its files, their bytes and how many backups (by manifest) it holds."""
    return _walk(settings.backup_dir)


def log_directory(settings: Settings) -> Directory:
    """LOG_FILE and its rotated files (`<name>.<date>[.gz]` beside it); nothing without LOG_FILE."""
    if settings.log_file is None:
        return Directory(None, 0, 0)
    found = _walk(settings.log_file.parent, name_prefix=settings.log_file.name)
    return Directory(found.path, found.files, found.bytes)


def _existing(path: Path) -> Path:
    """The path or its nearest existing parent (BACKUP_DIR may not exist before the first backup)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk(label: DiskLabel, path: Path, settings: Settings) -> Disk:
    """Free and total bytes on the disk of `path`, warn below DISK_WARN_PERCENT or DISK_WARN_FREE_MB."""
    usage = shutil.disk_usage(_existing(path))
    percent = round(usage.free * 100 / usage.total, 2) if usage.total else 0.0
    reason = None
    if percent < settings.disk_warn_percent:
        reason = f"{percent:g}% free, below DISK_WARN_PERCENT={settings.disk_warn_percent:g}"
    elif usage.free < settings.disk_warn_free_mb * MB:
        reason = f"{usage.free // MB} MB free, below DISK_WARN_FREE_MB={settings.disk_warn_free_mb}"
    return Disk(label, str(path), usage.free, usage.total, percent, "warn" if reason else "ok", reason)


def disk_paths(settings: Settings) -> dict[DiskLabel, Path]:
    """The paths whose disks are watched, by their metrics label (logs only with LOG_FILE)."""
    paths: dict[DiskLabel, Path] = {"data": settings.data_dir, "backups": settings.backup_dir}
    database = sqlite_path(settings.database_url)
    if database is not None:
        paths["data"] = database.parent  # the database may live outside DATA_DIR: its disk is what matters
    if settings.log_file is not None:
        paths["logs"] = settings.log_file.parent
    return paths


def disks(settings: Settings) -> list[Disk]:
    """Each watched path's disk."""
    return [disk(label, path, settings) for label, path in disk_paths(settings).items()]


async def collect(engine: AsyncEngine, settings: Settings, *, largest: int = LARGEST_TABLES) -> StorageReport:
    """The whole storage report: database, backups, logs and disks."""
    database = await database_size(engine, settings.database_url, largest=largest)
    backups, logs, found = await asyncio.to_thread(
        lambda: (backup_directory(settings), log_directory(settings), disks(settings))
    )
    status: Literal["ok", "warn"] = "warn" if any(d.status == "warn" for d in found) else "ok"
    return StorageReport(status=status, database=database, backups=backups, logs=logs, disks=found)


# --- the gauges --------------------------------------------------------------------------------------


def publish(report: StorageReport) -> None:
    """Set the storage gauges from a report."""
    for found in report.disks:
        DISK_FREE.labels(path=found.label).set(found.free_bytes)
        DISK_TOTAL.labels(path=found.label).set(found.total_bytes)
    DATABASE_SIZE.set(report.database.size_bytes)
    BACKUP_DIR_SIZE.set(report.backups.bytes)
    LOG_DIR_SIZE.set(report.logs.bytes)


class StorageGauges:
    """Refreshes the storage gauges every STORAGE_REFRESH_SECONDS, so a scrape never walks a directory or asks the
    database (only the top few tables are read: the gauges need the totals)."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> StorageReport:
        """Measure now and set the gauges."""
        report = await collect(self._engine, self._settings, largest=0)
        publish(report)
        return report

    async def start(self) -> None:
        """Measure once (in the background: a slow disk must not hold up the start), then every period."""
        seconds = self._settings.storage_refresh_seconds
        if seconds <= 0:
            return

        async def loop() -> None:
            await logged(self.refresh, log=log, event="storage_refresh_failed")
            await every(seconds, self.refresh, log=log, event="storage_refresh_failed")

        self._task = asyncio.create_task(loop(), name="gatehouse-storage-gauges")

    async def close(self) -> None:
        """Stop refreshing."""
        await stop_task(self._task)
        self._task = None
