"""Checking a backup end to end (its file against the manifest, then restored into a scratch database and
compared), and decrypting one for a manual restore.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gatehouse.backups import postgres, sqlite
from gatehouse.backups.errors import (
    BackupNotEncrypted,
    BackupToolFailed,
    BackupUnusable,
    BackupWrongDatabase,
    OutputExists,
)
from gatehouse.backups.key import backup_key
from gatehouse.backups.manifest import Damaged, Manifest, compare_rows, describe_revision, find_backup, get_backup
from gatehouse.backups.snapshot import Progress
from gatehouse.backups.stored import Unusable, plaintext, scratch_dir
from gatehouse.settings import Settings


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of `verify_backup`: OK, or each problem found."""

    name: str
    problems: tuple[str, ...]
    tables: int = 0
    rows: int = 0

    @property
    def ok(self) -> bool:
        """Whether nothing was found wrong."""
        return not self.problems


async def verify_backup(settings: Settings, name: str, *, progress: Progress | None = None) -> VerifyResult:
    """Check a backup end to end: its file against the manifest, then restored into a scratch database; a damaged
    one (its manifest unreadable or missing, its file missing or cut short) fails, saying what is wrong."""
    manifest = await find_backup(settings, name)
    if isinstance(manifest, Damaged):
        return VerifyResult(manifest.name, (manifest.problem,))
    key = backup_key(settings) if manifest.encrypted else None
    if manifest.database == "postgresql" and settings.is_sqlite:
        raise BackupWrongDatabase(
            f"{manifest.name} is a PostgreSQL backup: verify it with DATABASE_URL set to a PostgreSQL server "
            "(it is restored into a scratch database there)"
        )
    async with scratch_dir(settings) as scratch:
        try:
            plain = await plaintext(settings, manifest, key, scratch, progress)
        except Unusable as exc:
            return VerifyResult(manifest.name, (exc.problem,))
        if manifest.database == "sqlite":
            snapshot, problems = await asyncio.to_thread(sqlite.sqlite_inspect, plain)
            if problems and not snapshot.rows:
                return VerifyResult(manifest.name, tuple(problems))  # not a database at all: nothing to compare
        else:
            problems = []
            async with postgres.pg_scratch_database(settings.database_url) as database:
                try:
                    await postgres.pg_restore(settings.database_url, plain, database=database)
                except BackupToolFailed as exc:
                    return VerifyResult(manifest.name, (f"it does not restore: {exc.message}",))
                snapshot = await postgres.pg_counts(settings.database_url, database=database)
    if snapshot.revision != manifest.revision:
        problems.append(
            f"the restored database is at revision {describe_revision(snapshot.revision)}, "
            f"the manifest says {describe_revision(manifest.revision)}"
        )
    problems += compare_rows(manifest.rows, snapshot.rows)
    return VerifyResult(manifest.name, tuple(problems), tables=len(snapshot.rows), rows=sum(snapshot.rows.values()))


async def decrypt_backup(settings: Settings, name: str, output: Path, *, progress: Progress | None = None) -> Manifest:
    """Write an encrypted backup's plain file to `output` (checked against its manifest), e.g. for a manual restore."""
    manifest = await get_backup(settings, name)
    if not manifest.encrypted:
        raise BackupNotEncrypted(
            f"{manifest.name} is not encrypted: use {settings.backup_dir / manifest.file} as it is"
        )
    if await asyncio.to_thread(output.exists):
        raise OutputExists(f"{output} exists: name a new file")
    key = backup_key(settings)
    async with scratch_dir(settings) as scratch:
        try:
            plain = await plaintext(settings, manifest, key, scratch, progress)
        except Unusable as exc:
            raise BackupUnusable(f"{manifest.name} cannot be decrypted, {exc.problem}") from exc
        # Moved when on the same disk, copied otherwise: never left half-written under its final name.
        staging = output.with_name(f".{output.name}.partial")
        await asyncio.to_thread(shutil.move, plain, staging)
        await asyncio.to_thread(os.replace, staging, output)
    return manifest
