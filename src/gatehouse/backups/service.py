"""Backups: create (optionally encrypted), list, verify by restoring into a scratch database, and restore.

BACKUP_DIR holds, per backup, its file `<name>.sqlite` or `<name>.pgdump` (`.enc` appended when encrypted,
see ops/backup_crypto.py) and its manifest `<name>.json`: when, which database, the migration revision, the
rows of every table, and the SHA-256 and size of the file as stored (so damage is found before anything is
decrypted) and of its plaintext. The manifest is written last: a backup without one never finished. Names
are `gatehouse-<UTC time>` (`-2`, `-3`... when taken in the same second), `-safety` for the ones a restore
takes first; BACKUP_KEEP of each kind are kept. Files are written aside and renamed into place, mode 0600.
How the database itself is copied and restored consistently: ops/backup_db.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError

from gatehouse import __version__
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.backups import database as backup_db
from gatehouse.backups.crypto import DecryptionError, Digests, decrypt_file, encrypt_file
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import alembic_config, head_revisions, upgrade
from gatehouse.errors import BadRequest, Conflict, GatehouseError, NotFound
from gatehouse.jobs.models import JobLock, JobRun, ReplicaBeat
from gatehouse.jobs.replicas import live_replicas
from gatehouse.settings import MIN_TOKEN_LENGTH, Settings

log = get_logger("gatehouse.backup")

Progress = Callable[[int, int | None], None]  # (bytes done in the current step, its total when known)
KINDS = ("regular", "safety")
MANIFEST_FORMAT = 1
# Written by serving processes on their own (heartbeats, job leases): not compared after a restore.
OPERATIONAL_TABLES = frozenset({"replica", "job_lock"})
STALE_PARTIAL_SECONDS = 24 * 3600.0  # leftovers of a backup that crashed are removed after a day
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SUFFIXES = (".json", ".sqlite.enc", ".pgdump.enc", ".sqlite", ".pgdump")
_READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    """What one backup holds, as stored in `<name>.json` beside it."""

    name: str
    kind: str  # regular | safety
    created_at: datetime
    database: str  # sqlite | postgresql
    revision: tuple[str, ...]
    rows: dict[str, int] = field(hash=False)
    file: str
    size: int  # bytes of the stored file
    sha256: str  # of the stored file
    encrypted: bool
    plaintext_size: int
    plaintext_sha256: str
    gatehouse_version: str
    duration_seconds: float

    @property
    def total_rows(self) -> int:
        """Rows in all tables together."""
        return sum(self.rows.values())

    def counts(self) -> dict[str, int | str]:
        """A short summary, e.g. for a job run's counts."""
        return {
            "name": self.name,
            "bytes": self.size,
            "rows": self.total_rows,
            "tables": len(self.rows),
            "encrypted": int(self.encrypted),
        }

    def to_json(self) -> str:
        """The manifest file's content."""
        data: dict[str, Any] = {"format": MANIFEST_FORMAT, **asdict(self)}
        data["created_at"] = self.created_at.isoformat()
        data["revision"] = list(self.revision)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Read a manifest file's content (ValueError / KeyError / TypeError when it is not one)."""
        data = json.loads(text)
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        # Names become paths (pruning deletes them, restore reads them): a manifest copied in from elsewhere
        # must not point outside BACKUP_DIR or at another file.
        name, file = str(data["name"]), str(data["file"])
        if not _NAME_RE.match(name) or file not in {name + suffix for suffix in _SUFFIXES if suffix != ".json"}:
            raise ValueError(f"manifest names {name!r} / {file!r}, which is not a backup of this directory")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            database=str(data["database"]),
            revision=tuple(str(r) for r in data["revision"]),
            rows={str(k): int(v) for k, v in data["rows"].items()},
            file=str(data["file"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            encrypted=bool(data["encrypted"]),
            plaintext_size=int(data["plaintext_size"]),
            plaintext_sha256=str(data["plaintext_sha256"]),
            gatehouse_version=str(data["gatehouse_version"]),
            duration_seconds=float(data["duration_seconds"]),
        )


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


# --- create ----------------------------------------------------------------------------------------------


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
    name, partial = await asyncio.to_thread(_reserve, directory, created_at, kind)
    suffix = ".sqlite" if settings.is_sqlite else ".pgdump"
    final: Path | None = None
    sealed = directory / f".{name}.enc.partial"
    try:
        if settings.is_sqlite:
            live = backup_db.sqlite_path(settings.database_url)
            snapshot = await asyncio.to_thread(backup_db.sqlite_copy, live, partial, progress=progress)
        else:
            snapshot = await backup_db.pg_dump(settings.database_url, partial, progress=progress)
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
        await asyncio.to_thread(_write_manifest, directory, manifest)
    except BaseException:
        if final is not None:
            final.unlink(missing_ok=True)
        raise
    finally:
        partial.unlink(missing_ok=True)
        sealed.unlink(missing_ok=True)
    removed = await asyncio.to_thread(_prune, directory, kind, settings.backup_keep)
    log.info("backup_created", **manifest.counts(), kind=kind, seconds=manifest.duration_seconds, pruned=removed)
    return manifest


def backup_key(settings: Settings) -> str:
    """BACKUP_KEY, or an error saying how to set it."""
    key = settings.backup_key.get_secret_value()
    if not key:
        raise BadRequest(
            f"BACKUP_KEY is not set: set it (or BACKUP_KEY_FILE) to {MIN_TOKEN_LENGTH}+ random characters, and keep a "
            "copy away from the backups: without it an encrypted backup cannot be read",
            code="backup_key_missing",
        )
    if len(key) < MIN_TOKEN_LENGTH:
        raise BadRequest(
            f"BACKUP_KEY is {len(key)} characters: use at least {MIN_TOKEN_LENGTH}", code="backup_key_too_short"
        )
    return key


def backup_dir(settings: Settings) -> Path:
    """BACKUP_DIR, created (mode 0700) when missing."""
    directory = settings.backup_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def _reserve(directory: Path, created_at: datetime, kind: str) -> tuple[str, Path]:
    """A name no other backup has, claimed by creating its partial file exclusively."""
    stamp = f"gatehouse-{created_at:%Y%m%dT%H%M%SZ}"
    tail = "-safety" if kind == "safety" else ""
    # After the highest number taken in this second, so a name freed by pruning is never given out again.
    taken = re.compile(rf"^\.?{re.escape(stamp)}(?:-(\d+))?{re.escape(tail)}\.")
    numbers = [int(m.group(1) or 1) for m in map(taken.match, os.listdir(directory)) if m]
    for attempt in range(max(numbers, default=0) + 1, 10_000):
        name = f"{stamp}{'' if attempt == 1 else f'-{attempt}'}{tail}"
        if any((directory / f"{name}{suffix}").exists() for suffix in _SUFFIXES):
            continue
        partial = directory / f".{name}.partial"
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        return name, partial
    raise GatehouseError(f"No free backup name for {stamp} in {directory}")


def _encrypt(source: Path, target: Path, key: str, progress: Progress | None) -> Digests:
    fd = os.open(target, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        digests = encrypt_file(source, handle, key, progress=progress)
        handle.flush()
        os.fsync(handle.fileno())
    return digests


def _digest(path: Path, progress: Progress | None) -> Digests:
    size, sha = _sha256(path, progress)
    return Digests(sha, size, sha, size)


def _sha256(path: Path, progress: Progress | None = None) -> tuple[int, str]:
    sha = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_SIZE):
            sha.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return done, sha.hexdigest()


def _publish(partial: Path, final: Path) -> None:
    """Durably move a finished file into place."""
    os.chmod(partial, 0o600)
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)


def _write_manifest(directory: Path, manifest: Manifest) -> None:
    staging = directory / f".{manifest.name}.json.partial"
    fd = os.open(staging, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(manifest.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, directory / f"{manifest.name}.json")
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _prune(directory: Path, kind: str, keep: int) -> list[str]:
    """Remove backups of `kind` beyond the newest `keep`, and leftovers of crashed runs; the names removed."""
    removed = []
    for manifest in [m for m in _read_manifests(directory) if m.kind == kind][keep:]:
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


# --- list ------------------------------------------------------------------------------------------------


async def list_backups(settings: Settings) -> list[Manifest]:
    """Every backup in BACKUP_DIR, newest first."""
    return await asyncio.to_thread(_read_manifests, settings.backup_dir)


def _read_manifests(directory: Path) -> list[Manifest]:
    if not directory.is_dir():
        return []
    manifests = []
    for path in directory.glob("*.json"):
        try:
            manifests.append(Manifest.from_json(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("backup_manifest_unreadable", file=path.name, error=f"{type(exc).__name__}: {exc}"[:200])
    return sorted(manifests, key=lambda m: (m.created_at, m.name), reverse=True)


async def get_backup(settings: Settings, name: str) -> Manifest:
    """One backup's manifest, by name (a file name of the backup works too)."""
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    if not _NAME_RE.match(name):
        raise BadRequest(f"{name!r} is not a backup name: `gatehouse backup list` shows them", code="backup_name")
    path = settings.backup_dir / f"{name}.json"
    try:
        text = await asyncio.to_thread(path.read_text)
    except FileNotFoundError:
        raise NotFound(
            f"No backup named {name} in {settings.backup_dir}: `gatehouse backup list` shows the backups there",
            code="backup_not_found",
        ) from None
    try:
        return Manifest.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"The manifest {path} cannot be read: {exc}", code="backup_manifest_invalid") from exc


# --- verify ----------------------------------------------------------------------------------------------


async def verify_backup(settings: Settings, name: str, *, progress: Progress | None = None) -> VerifyResult:
    """Check a backup end to end: its file against the manifest, then restored into a scratch database."""
    manifest = await get_backup(settings, name)
    key = backup_key(settings) if manifest.encrypted else None
    if manifest.database == "postgresql" and settings.is_sqlite:
        raise BadRequest(
            f"{manifest.name} is a PostgreSQL backup: verify it with DATABASE_URL set to a PostgreSQL server "
            "(it is restored into a scratch database there)",
            code="backup_wrong_database",
        )
    async with _scratch_dir(settings) as scratch:
        try:
            plain = await _plaintext(settings, manifest, key, scratch, progress)
        except _Unusable as exc:
            return VerifyResult(manifest.name, (exc.problem,))
        if manifest.database == "sqlite":
            snapshot, problems = await asyncio.to_thread(backup_db.sqlite_inspect, plain)
            if problems and not snapshot.rows:
                return VerifyResult(manifest.name, tuple(problems))  # not a database at all: nothing to compare
        else:
            problems = []
            async with backup_db.pg_scratch_database(settings.database_url) as database:
                try:
                    await backup_db.pg_restore(settings.database_url, plain, database=database)
                except backup_db.BackupToolFailed as exc:
                    return VerifyResult(manifest.name, (f"it does not restore: {exc.message}",))
                snapshot = await backup_db.pg_counts(settings.database_url, database=database)
    if snapshot.revision != manifest.revision:
        problems.append(
            f"the restored database is at revision {_revisions(snapshot.revision)}, "
            f"the manifest says {_revisions(manifest.revision)}"
        )
    problems += _compare_rows(manifest.rows, snapshot.rows)
    return VerifyResult(manifest.name, tuple(problems), tables=len(snapshot.rows), rows=sum(snapshot.rows.values()))


class _Unusable(Exception):
    """The stored file is damaged, cut short or needs another key: `problem` says which."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


async def _plaintext(
    settings: Settings, manifest: Manifest, key: str | None, scratch: Path, progress: Progress | None
) -> Path:
    """The backup's plain database file (decrypted into `scratch` when encrypted), checked against its manifest."""
    path = settings.backup_dir / manifest.file
    if not await asyncio.to_thread(path.exists):
        raise _Unusable(f"its file {path} is missing")
    size, sha = await asyncio.to_thread(_sha256, path, progress)
    if size != manifest.size:
        cut = "it is truncated" if size < manifest.size else "it was changed"
        raise _Unusable(f"its file is {size} bytes, the manifest says {manifest.size}: {cut}")
    if sha != manifest.sha256:
        raise _Unusable("its file's SHA-256 does not match the manifest: the file is corrupted")
    if key is None:
        return path
    plain = scratch / manifest.file.removesuffix(".enc")
    try:
        digests = await asyncio.to_thread(_decrypt, path, plain, key, progress)
    except DecryptionError as exc:
        if exc.reason == "wrong_key":
            raise _Unusable("it cannot be decrypted: BACKUP_KEY is not the key it was encrypted with") from exc
        raise _Unusable(f"it cannot be decrypted: {exc}") from exc
    if (digests.output_size, digests.output_sha256) != (manifest.plaintext_size, manifest.plaintext_sha256):
        raise _Unusable("its decrypted content does not match the manifest's SHA-256")
    return plain


def _decrypt(source: Path, target: Path, key: str, progress: Progress | None) -> Digests:
    fd = os.open(target, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as handle:
        return decrypt_file(source, handle, key, progress=progress)


@asynccontextmanager
async def _scratch_dir(settings: Settings) -> AsyncIterator[Path]:
    """A private directory beside the backups (same disk, known space) for decrypted copies; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=".gatehouse-scratch-", dir=backup_dir(settings)))
    try:
        yield directory
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)


def _compare_rows(expected: dict[str, int], found: dict[str, int], *, restored: bool = False) -> list[str]:
    """Each table whose row count differs from the manifest's; after a restore, tables that serving processes
    write on their own and tables a migration added or removed are left out."""
    problems = []
    for table, count in sorted(expected.items()):
        if restored and (table in OPERATIONAL_TABLES or table not in found):
            continue
        if table not in found:
            problems.append(f"table {table} is missing (the manifest has {count} rows)")
        elif found[table] != count:
            problems.append(f"table {table} has {found[table]} rows, the manifest says {count}")
    extra = sorted(set(found) - set(expected))
    if extra and not restored:
        problems.append(f"tables not in the manifest: {', '.join(extra)}")
    return problems


def _revisions(revision: tuple[str, ...]) -> str:
    return ", ".join(revision) or "none (never migrated)"


async def decrypt_backup(settings: Settings, name: str, output: Path, *, progress: Progress | None = None) -> Manifest:
    """Write an encrypted backup's plain file to `output` (checked against its manifest), e.g. for a manual restore."""
    manifest = await get_backup(settings, name)
    if not manifest.encrypted:
        raise BadRequest(
            f"{manifest.name} is not encrypted: use {settings.backup_dir / manifest.file} as it is",
            code="backup_not_encrypted",
        )
    if await asyncio.to_thread(output.exists):
        raise Conflict(f"{output} exists: name a new file", code="output_exists")
    key = backup_key(settings)
    async with _scratch_dir(settings) as scratch:
        try:
            plain = await _plaintext(settings, manifest, key, scratch, progress)
        except _Unusable as exc:
            raise BadRequest(f"{manifest.name} cannot be decrypted, {exc.problem}", code="backup_unusable") from exc
        # Moved when on the same disk, copied otherwise: never left half-written under its final name.
        staging = output.with_name(f".{output.name}.partial")
        await asyncio.to_thread(shutil.move, plain, staging)
        await asyncio.to_thread(os.replace, staging, output)
    return manifest


# --- restore ---------------------------------------------------------------------------------------------


async def restore_backup(
    settings: Settings, name: str, *, force: bool, progress: Progress | None = None, actor: Actor | None = None
) -> RestoreResult:
    """Replace the database with a backup: refuse while it is served (unless force), take a safety backup,
    restore, migrate to head, check the rows against the manifest, and audit it (`backup.restored`)."""
    manifest = await get_backup(settings, name)
    database = "sqlite" if settings.is_sqlite else "postgresql"
    if manifest.database != database:
        raise BadRequest(
            f"{manifest.name} is a {manifest.database} backup and DATABASE_URL is {database}: restore it into a "
            f"{manifest.database} database",
            code="backup_wrong_database",
        )
    unknown = set(manifest.revision) - await asyncio.to_thread(_known_revisions)
    if unknown:
        raise BadRequest(
            f"{manifest.name} is at revision {_revisions(manifest.revision)}, which this Gatehouse ({__version__}) "
            f"does not know: restore it with Gatehouse {manifest.gatehouse_version} or newer",
            code="backup_revision_unknown",
        )
    key = backup_key(settings) if manifest.encrypted else None
    serving = await serving_processes(settings)
    if serving and not force:
        raise in_use(serving)
    async with _scratch_dir(settings) as scratch:
        try:
            plain = await _plaintext(settings, manifest, key, scratch, progress)
        except _Unusable as exc:
            raise BadRequest(
                f"{manifest.name} cannot be restored, {exc.problem}. Nothing was changed: restore another backup "
                "(`gatehouse backup list`)",
                code="backup_unusable",
            ) from exc
        # Read the whole copy before anything changes: no safety backup, no restore, for one that cannot work.
        if database == "sqlite":
            found, problems = await asyncio.to_thread(backup_db.sqlite_inspect, plain)
            problems += _compare_rows(manifest.rows, found.rows) if found.rows else []
        else:
            unreadable = await backup_db.pg_readable(plain)
            problems = [unreadable] if unreadable else []
        if problems:
            raise BadRequest(
                f"{manifest.name} cannot be restored: {'; '.join(problems)}. Nothing was changed",
                code="backup_unusable",
            )
        safety = None
        if await _has_tables(settings):
            encrypt_safety = bool(settings.backup_key.get_secret_value())
            safety = (await create_backup(settings, encrypt=encrypt_safety, kind="safety", progress=progress)).name
        if database == "sqlite":
            live = backup_db.sqlite_path(settings.database_url)
            await asyncio.to_thread(backup_db.sqlite_restore, plain, live)
        else:
            await backup_db.pg_restore(settings.database_url, plain)
    await upgrade(settings.database_url)
    if database == "sqlite":
        snapshot = await asyncio.to_thread(backup_db.sqlite_counts, backup_db.sqlite_path(settings.database_url))
    else:
        snapshot = await backup_db.pg_counts(settings.database_url)
    problems = _compare_rows(manifest.rows, snapshot.rows, restored=True)
    if problems and serving:
        problems.append(f"{len(serving)} Gatehouse process(es) kept serving during the restore and may have written")
    if set(snapshot.revision) != set(head_revisions()):
        problems.append(
            f"the database is at {_revisions(snapshot.revision)}, not at head {_revisions(head_revisions())}"
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
            details = {
                "taken_at": manifest.created_at.isoformat(),
                "revision": list(manifest.revision),
                "safety_backup": safety,
                "forced": bool(serving),
            }
            await record(
                session,
                actor=actor,
                action="backup.restored",
                target_type="backup",
                target_id=manifest.name,
                details=details,
            )
    finally:
        await engine.dispose()


def in_use(serving: list[str]) -> Conflict:
    """The error for a restore while Gatehouse serves the database."""
    return Conflict(
        f"Gatehouse is serving this database ({'; '.join(serving)}): stop it first (a server keeps caches "
        "and writes that do not belong to the restored data), or pass --force to restore anyway",
        code="database_in_use",
    )


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    return {revision.revision for revision in script.walk_revisions()}


async def _has_tables(settings: Settings) -> bool:
    if settings.is_sqlite:
        return await asyncio.to_thread(backup_db.sqlite_has_tables, backup_db.sqlite_path(settings.database_url))
    return await backup_db.pg_has_tables(settings.database_url)


async def serving_processes(settings: Settings) -> list[str]:
    """The processes serving the database now, described for a person (none when it has no `replica` table)."""
    if settings.is_sqlite and not backup_db.sqlite_path(settings.database_url).exists():
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
