"""The backup directory's layout and each backup's manifest: how backups are named, listed and found, and how
what a database holds is compared with what a manifest says.

BACKUP_DIR holds, per backup, its file `<name>.sqlite` or `<name>.pgdump` (`.enc` appended when encrypted,
see backups/crypto.py) and its manifest `<name>.json`: when, which database, the migration revision, the
rows of every table, and the SHA-256 and size of the file as stored (so damage is found before anything is
decrypted) and of its plaintext. The manifest is written last: a backup without one never finished. Names
are `gatehouse-<UTC time>` (`-2`, `-3`... when taken in the same second), `-safety` for the ones a restore
takes first; BACKUP_KEEP of each kind are kept. Files are written aside and renamed into place, mode 0600.

A backup whose manifest is missing or cannot be read, or whose file is missing or not the manifest's size, is
damaged: it is listed as such with what is wrong (never left out), refused by verify and restore, and neither
counted as a generation nor pruned. Only what is seen without reading the file is checked here; verify reads it.
Creating a backup: backups/create.py; checking one: backups/verify.py; restoring one: backups/restore.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gatehouse.backups.errors import BackupManifestInvalid, BackupNameInvalid, BackupNotFound, BackupUnusable
from gatehouse.backups.manifest_schema import MANIFEST_FORMAT, ManifestError, read_fields
from gatehouse.settings import Settings

# Written by serving processes on their own (heartbeats, job leases): not compared after a restore.
OPERATIONAL_TABLES = frozenset({"replica", "job_lock", "quota_reservation"})
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUFFIXES = (".json", ".sqlite.enc", ".pgdump.enc", ".sqlite", ".pgdump")
# The names create_backup gives: the UTC second, and the number of the backup within it (1 when absent).
STAMP_RE = re.compile(r"^gatehouse-(\d{8}T\d{6}Z)(?:-(\d+))?(?:-safety)?$")
STALE_PARTIAL_SECONDS = 24 * 3600.0  # leftovers of a backup that crashed are removed after a day


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
        """Read a manifest file's content; ManifestError says what is wrong when it is not one."""
        values = read_fields(text)
        # Names become paths (pruning deletes them, restore reads them): a manifest copied in from elsewhere
        # must not point outside BACKUP_DIR or at another file.
        name, file = values["name"], values["file"]
        if not NAME_RE.match(name) or file not in {name + suffix for suffix in SUFFIXES if suffix != ".json"}:
            raise ManifestError(f"names {name!r} / {file!r}, which is not a backup of this directory")
        database, encrypted = values["database"], values["encrypted"]
        if file != name + (".sqlite" if database == "sqlite" else ".pgdump") + (".enc" if encrypted else ""):
            locked = "encrypted" if encrypted else "not encrypted"
            raise ManifestError(f"says {database}, {locked}, but names the file {file}")
        return cls(**values)


@dataclass(frozen=True)
class Damaged:
    """A backup in BACKUP_DIR that cannot be used as it is: which of its files is wrong, and how."""

    name: str
    kind: str  # regular | safety, from its name
    created_at: datetime  # from its name, else from its files' time
    files: tuple[str, ...]  # what BACKUP_DIR holds of it
    part: str  # manifest | file: which one is damaged
    problem: str  # e.g. "its manifest NAME.json is not valid JSON (...)"


@dataclass(frozen=True)
class Inventory:
    """What BACKUP_DIR holds: the intact backups and the damaged ones, each newest first."""

    intact: tuple[Manifest, ...]
    damaged: tuple[Damaged, ...]

    def newest_first(self) -> list[Manifest | Damaged]:
        """Every backup, intact or damaged, newest first."""
        return sorted([*self.intact, *self.damaged], key=_age, reverse=True)


def _age(backup: Manifest | Damaged) -> tuple[datetime, int, datetime, str]:
    # A damaged backup's time comes from its name, to the second: within one second, the number in the name
    # orders the backups as they were taken.
    stamp = STAMP_RE.match(backup.name)
    number = int(stamp.group(2) or 1) if stamp else 0
    return backup.created_at.replace(microsecond=0), number, backup.created_at, backup.name


def backup_dir(settings: Settings) -> Path:
    """BACKUP_DIR, created (mode 0700) when missing."""
    directory = settings.backup_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


async def inventory(settings: Settings) -> Inventory:
    """Every backup in BACKUP_DIR, the damaged ones included."""
    return await asyncio.to_thread(read_inventory, settings.backup_dir)


async def list_backups(settings: Settings) -> list[Manifest]:
    """The intact backups in BACKUP_DIR, newest first (`inventory` also gives the damaged ones)."""
    return list((await inventory(settings)).intact)


def read_inventory(directory: Path) -> Inventory:
    """The backups in `directory`: each name with a manifest or a backup file is one, intact or damaged."""
    if not directory.is_dir():
        return Inventory((), ())
    files: dict[str, list[str]] = {}
    for entry in os.listdir(directory):
        suffix = next((s for s in SUFFIXES if entry.endswith(s)), None)
        if suffix is not None and NAME_RE.match(entry) and NAME_RE.match(name := entry.removesuffix(suffix)):
            files.setdefault(name, []).append(entry)
    found = [_examine(directory, name, sorted(names)) for name, names in files.items()]
    intact = [b for b in found if isinstance(b, Manifest)]
    damaged = [b for b in found if isinstance(b, Damaged)]
    return Inventory(tuple(sorted(intact, key=_age, reverse=True)), tuple(sorted(damaged, key=_age, reverse=True)))


def _examine(directory: Path, name: str, files: list[str]) -> Manifest | Damaged | None:
    """One backup as its files are: intact, damaged (and why), or None while it is being written."""
    manifest_file = f"{name}.json"

    def damaged(part: str, problem: str) -> Damaged:
        return Damaged(name, _kind_of(name), _time_of(directory, name, files), tuple(files), part, problem)

    if manifest_file not in files:
        if _being_written(directory, name):
            return None
        never = "the backup never finished, or the manifest was deleted"
        return damaged("manifest", f"its manifest {manifest_file} is missing: {never}")
    try:
        text = (directory / manifest_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return damaged("manifest", f"its manifest {manifest_file} cannot be read ({reason})")
    try:
        manifest = Manifest.from_json(text)
    except ManifestError as exc:
        return damaged("manifest", f"its manifest {manifest_file} {exc}")
    if manifest.name != name:
        return damaged("manifest", f"its manifest {manifest_file} is {manifest.name}'s: it was renamed or copied")
    try:
        size = (directory / manifest.file).stat().st_size
    except FileNotFoundError:
        return damaged("file", f"its file {manifest.file} is missing")
    except OSError as exc:
        return damaged("file", f"its file {manifest.file} cannot be read ({exc.strerror or type(exc).__name__})")
    problem = size_problem(manifest, size)
    return damaged("file", problem) if problem else manifest


def size_problem(manifest: Manifest, size: int) -> str | None:
    """What is wrong when the stored file is not the manifest's size (None: it is)."""
    if size == manifest.size:
        return None
    cut = "it is truncated" if size < manifest.size else "it was changed"
    return f"its file {manifest.file} is {size} bytes, the manifest says {manifest.size}: {cut}"


def _being_written(directory: Path, name: str) -> bool:
    """Whether a backup of this name is being created now: its claim (backups/create.py) is there, and fresh."""
    try:
        claimed = (directory / f".{name}.partial").stat().st_mtime
    except OSError:
        return False
    return claimed > time.time() - STALE_PARTIAL_SECONDS


def _kind_of(name: str) -> str:
    return "safety" if name.endswith("-safety") else "regular"


def _time_of(directory: Path, name: str, files: list[str]) -> datetime:
    """When a damaged backup was taken: the time in its name, else the newest of its files' times."""
    stamp = STAMP_RE.match(name)
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    times = []
    for file in files:
        with contextlib.suppress(OSError):
            times.append((directory / file).stat().st_mtime)
    return datetime.fromtimestamp(max(times, default=0.0), UTC)


async def find_backup(settings: Settings, name: str) -> Manifest | Damaged:
    """One backup, intact or damaged, by name (a file name of the backup works too)."""
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    if not NAME_RE.match(name):
        raise BackupNameInvalid(f"{name!r} is not a backup name: `gatehouse backup list` shows them")
    directory = settings.backup_dir

    def examine() -> Manifest | Damaged | None:
        files = [name + suffix for suffix in SUFFIXES if (directory / (name + suffix)).exists()]
        return _examine(directory, name, files) if files else None

    found = await asyncio.to_thread(examine)
    if found is None:
        raise BackupNotFound(
            f"No backup named {name} in {directory} (or it is still being written): `gatehouse backup list` shows "
            "the backups there"
        )
    return found


async def get_backup(settings: Settings, name: str) -> Manifest:
    """One intact backup's manifest, by name; a damaged one is refused, saying what is wrong."""
    found = await find_backup(settings, name)
    if isinstance(found, Damaged):
        raise _refused(found)
    return found


def _refused(damaged: Damaged) -> BackupManifestInvalid | BackupUnusable:
    """The error for using a damaged backup."""
    error = BackupManifestInvalid if damaged.part == "manifest" else BackupUnusable
    return error(
        f"Backup {damaged.name} is damaged: {damaged.problem}. Nothing was changed: use another backup "
        "(`gatehouse backup list` marks the damaged ones)"
    )


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Durably write a manifest into place: the last step of a backup, which makes it one."""
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


def compare_rows(expected: dict[str, int], found: dict[str, int], *, restored: bool = False) -> list[str]:
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


def describe_revision(revision: tuple[str, ...]) -> str:
    """Migration revision(s), for a person."""
    return ", ".join(revision) or "none (never migrated)"
