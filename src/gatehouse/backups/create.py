"""Creating a backup: a consistent copy of the database (backups/sqlite.py, backups/postgres.py), encrypted
or not, its digests, the file published into BACKUP_DIR and its manifest written last (backups/manifest.py),
then the generations beyond BACKUP_KEEP pruned. The name is claimed by an empty `.<name>.partial` file kept
until the manifest is in place, so a listing tells a backup being written from one whose manifest is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path

from gatehouse import __version__
from gatehouse.backups import postgres, sqlite
from gatehouse.backups.crypto import Digests, encrypt_file
from gatehouse.backups.key import backup_key
from gatehouse.backups.manifest import (
    STALE_PARTIAL_SECONDS,
    SUFFIXES,
    Manifest,
    backup_dir,
    read_inventory,
    write_manifest,
)
from gatehouse.backups.manifest_schema import KINDS
from gatehouse.backups.snapshot import Progress
from gatehouse.backups.stored import sha256_file
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.errors import GatehouseError
from gatehouse.settings import Settings

log = get_logger("gatehouse.backup")


async def create_backup(
    settings: Settings, *, encrypt: bool, kind: str = "regular", progress: Progress | None = None
) -> Manifest:
    """Back up the database into BACKUP_DIR, then keep only the newest BACKUP_KEEP backups of this kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    key = backup_key(settings) if encrypt else None
    directory = backup_dir(settings)
    started, created_at = time.monotonic(), utcnow()
    database = "sqlite" if settings.is_sqlite else "postgresql"
    name, claim = await asyncio.to_thread(_reserve, directory, created_at, kind)
    suffix = ".sqlite" if settings.is_sqlite else ".pgdump"
    final: Path | None = None
    partial = directory / f".{name}.copy.partial"
    sealed = directory / f".{name}.enc.partial"
    try:
        await asyncio.to_thread(_create_private, partial)
        if settings.is_sqlite:
            live = sqlite.sqlite_path(settings.database_url)
            snapshot = await asyncio.to_thread(sqlite.sqlite_copy, live, partial, progress=progress)
        else:
            snapshot = await postgres.pg_dump(settings.database_url, partial, progress=progress)
        if key is not None:
            digests = await asyncio.to_thread(_encrypt, partial, sealed, key, progress)
            final = directory / f"{name}{suffix}.enc"
            await asyncio.to_thread(_publish, sealed, final)
        else:
            digests = await asyncio.to_thread(_digest, partial, progress)
            final = directory / f"{name}{suffix}"
            await asyncio.to_thread(_publish, partial, final)
        manifest = Manifest(
            name=name,
            kind=kind,
            created_at=created_at,
            database=database,
            revision=snapshot.revision,
            rows=snapshot.rows,
            file=final.name,
            size=digests.output_size,
            sha256=digests.output_sha256,
            encrypted=key is not None,
            plaintext_size=digests.source_size,
            plaintext_sha256=digests.source_sha256,
            gatehouse_version=__version__,
            duration_seconds=round(time.monotonic() - started, 3),
        )
        await asyncio.to_thread(write_manifest, directory, manifest)
    except BaseException:
        if final is not None:
            final.unlink(missing_ok=True)
        raise
    finally:
        partial.unlink(missing_ok=True)
        sealed.unlink(missing_ok=True)
        claim.unlink(missing_ok=True)  # last: until the manifest is in place, the backup is being written
    removed = await asyncio.to_thread(_prune, directory, kind, settings.backup_keep)
    log.info("backup_created", **manifest.counts(), kind=kind, seconds=manifest.duration_seconds, pruned=removed)
    return manifest


def _reserve(directory: Path, created_at: datetime, kind: str) -> tuple[str, Path]:
    """A name no other backup has, claimed by creating its claim `.<name>.partial` exclusively."""
    stamp = f"gatehouse-{created_at:%Y%m%dT%H%M%SZ}"
    tail = "-safety" if kind == "safety" else ""
    # After the highest number taken in this second, so a name freed by pruning is never given out again.
    taken = re.compile(rf"^\.?{re.escape(stamp)}(?:-(\d+))?{re.escape(tail)}\.")
    numbers = [int(m.group(1) or 1) for m in map(taken.match, os.listdir(directory)) if m]
    for attempt in range(max(numbers, default=0) + 1, 10_000):
        name = f"{stamp}{'' if attempt == 1 else f'-{attempt}'}{tail}"
        if any((directory / f"{name}{suffix}").exists() for suffix in SUFFIXES):
            continue
        claim = directory / f".{name}.partial"
        try:
            _create_private(claim)
        except FileExistsError:
            continue
        return name, claim
    raise GatehouseError(f"No free backup name for {stamp} in {directory}")


def _create_private(path: Path) -> None:
    """A new empty file only its owner can read (FileExistsError if there is one)."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _encrypt(source: Path, target: Path, key: str, progress: Progress | None) -> Digests:
    fd = os.open(target, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        digests = encrypt_file(source, handle, key, progress=progress)
        handle.flush()
        os.fsync(handle.fileno())
    return digests


def _digest(path: Path, progress: Progress | None) -> Digests:
    size, sha = sha256_file(path, progress)
    return Digests(sha, size, sha, size)


def _publish(partial: Path, final: Path) -> None:
    """Durably move a finished file into place."""
    os.chmod(partial, 0o600)
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)


def _prune(directory: Path, kind: str, keep: int) -> list[str]:
    """Remove intact backups of `kind` beyond the newest `keep`, and leftovers of crashed runs; the names removed.

    A damaged backup is neither counted nor removed: it never pushes an intact one out, and it stays for a person
    to look at (the backup job fails while there is one, see backups/scheduled.py).
    """
    removed = []
    for manifest in [m for m in read_inventory(directory).intact if m.kind == kind][keep:]:
        (directory / f"{manifest.name}.json").unlink(missing_ok=True)  # first: a listed backup always has its file
        (directory / manifest.file).unlink(missing_ok=True)
        removed.append(manifest.name)
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for leftover in directory.glob(".gatehouse-*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
    if removed:
        log.info("backups_pruned", kind=kind, removed=removed)
    return removed
