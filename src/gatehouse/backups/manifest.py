"""The backup directory's layout and each backup's manifest: how backups are named, listed and found, and how
what a database holds is compared with what a manifest says.

BACKUP_DIR holds, per backup, its file `<name>.sqlite` or `<name>.pgdump` (`.enc` appended when encrypted,
see backups/crypto.py) and its manifest `<name>.json`: when, which database, the migration revision, the
rows of every table, and the SHA-256 and size of the file as stored (so damage is found before anything is
decrypted) and of its plaintext. The manifest is written last: a backup without one never finished. Names
are `gatehouse-<UTC time>` (`-2`, `-3`... when taken in the same second), `-safety` for the ones a restore
takes first; BACKUP_KEEP of each kind are kept. Files are written aside and renamed into place, mode 0600.
Creating a backup: backups/create.py; checking one: backups/verify.py; restoring one: backups/restore.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gatehouse.backups.errors import BackupManifestInvalid, BackupNameInvalid, BackupNotFound
from gatehouse.core.logging import get_logger
from gatehouse.settings import Settings

log = get_logger("gatehouse.backup")

KINDS = ("regular", "safety")
MANIFEST_FORMAT = 1
# Written by serving processes on their own (heartbeats, job leases): not compared after a restore.
OPERATIONAL_TABLES = frozenset({"replica", "job_lock"})
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUFFIXES = (".json", ".sqlite.enc", ".pgdump.enc", ".sqlite", ".pgdump")


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
        if not NAME_RE.match(name) or file not in {name + suffix for suffix in SUFFIXES if suffix != ".json"}:
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


def backup_dir(settings: Settings) -> Path:
    """BACKUP_DIR, created (mode 0700) when missing."""
    directory = settings.backup_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


async def list_backups(settings: Settings) -> list[Manifest]:
    """Every backup in BACKUP_DIR, newest first."""
    return await asyncio.to_thread(read_manifests, settings.backup_dir)


def read_manifests(directory: Path) -> list[Manifest]:
    """The manifests in `directory`, newest first; an unreadable one is logged and left out."""
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
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    if not NAME_RE.match(name):
        raise BackupNameInvalid(f"{name!r} is not a backup name: `gatehouse backup list` shows them")
    path = settings.backup_dir / f"{name}.json"
    try:
        text = await asyncio.to_thread(path.read_text)
    except FileNotFoundError:
        raise BackupNotFound(
            f"No backup named {name} in {settings.backup_dir}: `gatehouse backup list` shows the backups there"
        ) from None
    try:
        return Manifest.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupManifestInvalid(f"The manifest {path} cannot be read: {exc}") from exc


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
