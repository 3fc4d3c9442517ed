"""Restoring a backup: refused while Gatehouse serves the database (unless forced), a safety backup of the
data it replaces first, then the restore, a migration to head, a check of the rows against the manifest, and
the restore recorded in the restored audit log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError

from gatehouse import __version__
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.backups import postgres, sqlite
from gatehouse.backups.create import create_backup
from gatehouse.backups.errors import BackupRevisionUnknown, BackupUnusable, BackupWrongDatabase, DatabaseInUse
from gatehouse.backups.events import BackupRestoredEvent
from gatehouse.backups.key import backup_key
from gatehouse.backups.manifest import Manifest, compare_rows, describe_revision, get_backup
from gatehouse.backups.snapshot import Progress
from gatehouse.backups.stored import Unusable, plaintext, scratch_dir
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import alembic_config, head_revisions, upgrade
from gatehouse.jobs.models import JobLock, JobRun, ReplicaBeat
from gatehouse.jobs.replicas import live_replicas
from gatehouse.settings import Settings

log = get_logger("gatehouse.backup")


@dataclass(frozen=True)
class RestoreResult:
    """The outcome of `restore_backup`: what was restored, the safety backup taken first, what the check found."""

    name: str
    safety_backup: str | None
    revision: tuple[str, ...]  # the database's, after migrating to head
    rows: int
    problems: tuple[str, ...]
    serving: tuple[str, ...]  # processes that were serving (restored over with force)

    @property
    def ok(self) -> bool:
        """Whether nothing was found wrong."""
        return not self.problems


async def restore_backup(
    settings: Settings, name: str, *, force: bool, progress: Progress | None = None, actor: Actor | None = None
) -> RestoreResult:
    """Replace the database with a backup: refuse while it is served (unless force), take a safety backup,
    restore, migrate to head, check the rows against the manifest, and audit it (`backup.restored`)."""
    manifest = await get_backup(settings, name)
    database = "sqlite" if settings.is_sqlite else "postgresql"
    if manifest.database != database:
        raise BackupWrongDatabase(
            f"{manifest.name} is a {manifest.database} backup and DATABASE_URL is {database}: restore it into a "
            f"{manifest.database} database"
        )
    unknown = set(manifest.revision) - await asyncio.to_thread(_known_revisions)
    if unknown:
        raise BackupRevisionUnknown(
            f"{manifest.name} is at revision {describe_revision(manifest.revision)}, which this Gatehouse "
            f"({__version__}) does not know: restore it with Gatehouse {manifest.gatehouse_version} or newer"
        )
    key = backup_key(settings) if manifest.encrypted else None
    serving = await serving_processes(settings)
    if serving and not force:
        raise in_use(serving)
    async with scratch_dir(settings) as scratch:
        try:
            plain = await plaintext(settings, manifest, key, scratch, progress)
        except Unusable as exc:
            raise BackupUnusable(
                f"{manifest.name} cannot be restored, {exc.problem}. Nothing was changed: restore another backup "
                "(`gatehouse backup list`)"
            ) from exc
        # Read the whole copy before anything changes: no safety backup, no restore, for one that cannot work.
        if database == "sqlite":
            found, problems = await asyncio.to_thread(sqlite.sqlite_inspect, plain)
            problems += compare_rows(manifest.rows, found.rows) if found.rows else []
        else:
            unreadable = await postgres.pg_readable(plain)
            problems = [unreadable] if unreadable else []
        if problems:
            raise BackupUnusable(f"{manifest.name} cannot be restored: {'; '.join(problems)}. Nothing was changed")
        safety = None
        if await _has_tables(settings):
            encrypt_safety = bool(settings.backup_key.get_secret_value())
            safety = (await create_backup(settings, encrypt=encrypt_safety, kind="safety", progress=progress)).name
        if database == "sqlite":
            live = sqlite.sqlite_path(settings.database_url)
            await asyncio.to_thread(sqlite.sqlite_restore, plain, live)
        else:
            await postgres.pg_restore(settings.database_url, plain)
    await upgrade(settings.database_url)
    if database == "sqlite":
        snapshot = await asyncio.to_thread(sqlite.sqlite_counts, sqlite.sqlite_path(settings.database_url))
    else:
        snapshot = await postgres.pg_counts(settings.database_url)
    problems = compare_rows(manifest.rows, snapshot.rows, restored=True)
    if problems and serving:
        problems.append(f"{len(serving)} Gatehouse process(es) kept serving during the restore and may have written")
    if set(snapshot.revision) != set(head_revisions()):
        problems.append(
            f"the database is at {describe_revision(snapshot.revision)}, "
            f"not at head {describe_revision(head_revisions())}"
        )
    await _settle(settings, manifest, actor=actor or Actor.system("cli"), safety=safety, serving=serving)
    log.info("backup_restored", name=manifest.name, safety_backup=safety, forced=bool(serving), problems=len(problems))
    return RestoreResult(
        name=manifest.name,
        safety_backup=safety,
        revision=snapshot.revision,
        rows=sum(snapshot.rows.values()),
        problems=tuple(problems),
        serving=tuple(serving),
    )


async def _settle(
    settings: Settings, manifest: Manifest, *, actor: Actor, safety: str | None, serving: list[str]
) -> None:
    """Forget the backup's replica heartbeats (processes that served back then) and record the restore in the
    restored audit log, whose chain it continues: the log then says why the events since the backup are gone."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.execute(delete(ReplicaBeat))
            # Runs in progress when the backup was taken (a scheduled backup sees its own run) ended, or not,
            # in the database they ran on, not in this copy: say so, and free their locks.
            await session.execute(
                update(JobRun)
                .where(JobRun.status == "running")
                .values(
                    status="failed",
                    finished_at=utcnow(),
                    error=f"in progress when backup {manifest.name} was taken; its outcome is not in the restored data",
                )
            )
            await session.execute(update(JobLock).values(holder=None, expires_at=None, run_id=None))
            event = BackupRestoredEvent(
                name=manifest.name,
                taken_at=manifest.created_at.isoformat(),
                revision=list(manifest.revision),
                safety_backup=safety,
                forced=bool(serving),
            )
            await record(session, event, actor=actor)
    finally:
        await engine.dispose()


def in_use(serving: list[str]) -> DatabaseInUse:
    """The error for a restore while Gatehouse serves the database."""
    return DatabaseInUse(
        f"Gatehouse is serving this database ({'; '.join(serving)}): stop it first (a server keeps caches "
        "and writes that do not belong to the restored data), or pass --force to restore anyway"
    )


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    return {revision.revision for revision in script.walk_revisions()}


async def _has_tables(settings: Settings) -> bool:
    if settings.is_sqlite:
        return await asyncio.to_thread(sqlite.sqlite_has_tables, sqlite.sqlite_path(settings.database_url))
    return await postgres.pg_has_tables(settings.database_url)


async def serving_processes(settings: Settings) -> list[str]:
    """The processes serving the database now, described for a person (none when it has no `replica` table)."""
    if settings.is_sqlite and not sqlite.sqlite_path(settings.database_url).exists():
        return []
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            try:
                replicas = await live_replicas(session)
            except DBAPIError:
                await session.rollback()
                if await _has_table(session, "replica"):
                    raise
                return []
            since = "%Y-%m-%d %H:%M:%S"
            return [
                f"{beat.host} pid {beat.pid}, version {beat.version}, serving since {beat.started_at:{since}} UTC"
                for beat in replicas
            ]
    finally:
        await engine.dispose()


async def _has_table(session: Any, table: str) -> bool:
    from sqlalchemy import inspect

    connection = await session.connection()
    return bool(await connection.run_sync(lambda sync: inspect(sync).has_table(table)))
