"""Database maintenance: `gatehouse db maintain` and the `maintain` job (MAINTAIN_SCHEDULE).

SQLite: ANALYZE and `PRAGMA optimize` (fresh statistics for the planner), a full VACUUM only when asked (it
rewrites the whole file, needing its size free twice over: beside the database and in the temp directory), then
`PRAGMA wal_checkpoint(TRUNCATE)`, which folds the WAL back into the file and empties it. PostgreSQL: `VACUUM
(ANALYZE)` of each of Gatehouse's tables (autovacuum does this too; a run after a large purge helps at once).
Statements run on an autocommit connection of their own: VACUUM refuses to run inside a transaction.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.core.logging import get_logger
from gatehouse.core.schedule import parse_schedule
from gatehouse.db.engine import create_autocommit_engine
from gatehouse.errors import Conflict
from gatehouse.jobs.job import Job, JobContext
from gatehouse.monitoring.storage import MB, DatabaseSize, database_size, sqlite_path
from gatehouse.settings import Settings

log = get_logger("gatehouse.maintain")


class NotEnoughSpaceToVacuum(Conflict):
    """A SQLite VACUUM would need more free disk than there is: free space first, or skip --vacuum."""

    code = "insufficient_disk_space"


@dataclass
class MaintainReport:
    """What a maintenance run did, and the database before and after."""

    kind: str
    steps: list[str] = field(default_factory=list)
    size_before: int = 0
    size_after: int = 0
    wal_before: int | None = None
    wal_after: int | None = None
    freelist_before: int | None = None
    freelist_after: int | None = None
    dead_rows_before: int | None = None
    dead_rows_after: int | None = None
    tables: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """As JSON (`--json`)."""
        return asdict(self)

    def counts(self) -> dict[str, Any]:
        """What the job's run records: numbers only."""
        found = {"size_before": self.size_before, "size_after": self.size_after, "seconds": self.seconds}
        for name in ("wal_before", "wal_after", "freelist_before", "freelist_after", "dead_rows_before"):
            value = getattr(self, name)
            if value is not None:
                found[name] = value
        if self.tables:
            found["tables"] = self.tables
        return found


def check_vacuum_space(settings: Settings, size: DatabaseSize) -> None:
    """Refuse a VACUUM that would fill a disk: it writes a copy of the database in the temp directory and then back
    through the WAL beside the database, so each needs the database's size free, plus VACUUM_FREE_MARGIN_MB."""
    path = sqlite_path(settings.database_url)
    if path is None:
        return
    needed = size.size_bytes + settings.vacuum_free_margin_mb * MB
    for where in {path.absolute().parent, Path(tempfile.gettempdir())}:
        free = shutil.disk_usage(where).free
        if free < needed:
            raise NotEnoughSpaceToVacuum(
                f"VACUUM needs about {needed // MB} MB free in {where} (the database's {size.size_bytes // MB} MB "
                f"plus VACUUM_FREE_MARGIN_MB={settings.vacuum_free_margin_mb}), and {free // MB} MB are free: free "
                "some space (`gatehouse db stats` shows what takes it), or run without --vacuum (ANALYZE, optimize "
                "and the WAL checkpoint need no room)."
            )


async def _run(conn: AsyncConnection, report: MaintainReport, statement: str) -> Any:
    result = await conn.execute(text(statement))
    report.steps.append(statement)
    return result


async def _sqlite(conn: AsyncConnection, report: MaintainReport, *, vacuum: bool) -> None:
    await _run(conn, report, "ANALYZE")
    await _run(conn, report, "PRAGMA optimize")
    if vacuum:
        await _run(conn, report, "VACUUM")
    busy, _wal_pages, _moved = (await _run(conn, report, "PRAGMA wal_checkpoint(TRUNCATE)")).one()
    if busy:
        # A reader held the WAL: the checkpoint copied what it could; the WAL empties at a later run.
        log.warning("maintain_checkpoint_busy", reason="a reader held the WAL; it is truncated at a later run")


async def _postgres(conn: AsyncConnection, report: MaintainReport) -> None:
    names = (
        await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")
        )
    ).scalars()
    for name in list(names):
        quoted = '"' + str(name).replace('"', '""') + '"'
        await conn.execute(text(f"VACUUM (ANALYZE) {quoted}"))
        report.tables += 1
    report.steps.append(f"VACUUM (ANALYZE) of {report.tables} tables")


async def maintain_on(engine: AsyncEngine, settings: Settings, *, vacuum: bool = False) -> MaintainReport:
    """Maintain the database through `engine`, an AUTOCOMMIT one (see `maintain`)."""
    started = time.perf_counter()
    before = await database_size(engine, settings.database_url, largest=0)
    report = MaintainReport(
        kind=before.kind,
        size_before=before.size_bytes,
        wal_before=before.wal_bytes,
        freelist_before=before.freelist_pages,
    )
    if before.kind == "postgresql":
        report.dead_rows_before = await _dead_rows(engine)
    elif vacuum:
        await asyncio.to_thread(check_vacuum_space, settings, before)
    log.info("maintain_started", database=before.kind, vacuum=vacuum, size_bytes=before.size_bytes)
    async with engine.connect() as conn:
        if before.kind == "sqlite":
            await _sqlite(conn, report, vacuum=vacuum)
        else:
            await _postgres(conn, report)
    after = await database_size(engine, settings.database_url, largest=0)
    report.size_after, report.wal_after, report.freelist_after = after.size_bytes, after.wal_bytes, after.freelist_pages
    if after.kind == "postgresql":
        report.dead_rows_after = await _dead_rows(engine)
    report.seconds = round(time.perf_counter() - started, 3)
    log.info("maintain_finished", **report.counts())
    return report


async def _dead_rows(engine: AsyncEngine) -> int:
    """Dead tuples over Gatehouse's tables, as the statistics collector last reported them."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT COALESCE(SUM(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = current_schema()")
        )
        return int(found.scalar_one())


async def maintain(settings: Settings, *, vacuum: bool = False) -> MaintainReport:
    """Run the maintenance on DATABASE_URL, on a short-lived autocommit connection of its own."""
    engine = create_autocommit_engine(settings)
    try:
        return await maintain_on(engine, settings, vacuum=vacuum)
    finally:
        await engine.dispose()


async def _job(context: JobContext) -> dict[str, Any]:
    return (await maintain(context.settings)).counts()


def maintain_job(settings: Settings) -> Job:
    """The `maintain` job, on MAINTAIN_SCHEDULE; it never runs the full VACUUM (only `gatehouse db maintain
    --vacuum` does, by hand, when the disk has room)."""
    return Job(
        "maintain",
        "Database maintenance: ANALYZE, PRAGMA optimize and a WAL checkpoint on SQLite; VACUUM (ANALYZE) on "
        "PostgreSQL. The full SQLite VACUUM runs only by hand (`gatehouse db maintain --vacuum`).",
        _job,
        parse_schedule(settings.maintain_schedule) if settings.maintain_schedule else None,
    )
