"""Response shapes of /admin/backups."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gatehouse.backups.manifest import Damaged, Manifest
from gatehouse.backups.verify import VerifyResult


class BackupRead(BaseModel):
    """One backup in BACKUP_DIR: intact (what its manifest says) or damaged (what is wrong, and with which file)."""

    name: str
    kind: str = Field(description="regular, or safety (taken by a restore before it replaced the data)")
    created_at: datetime
    state: Literal["ok", "damaged"]
    database: str | None = Field(description="sqlite or postgresql; null when damaged")
    revision: list[str] = Field(description="The migration revision(s) of the data it holds.")
    size: int | None = Field(description="Bytes of the stored file.")
    encrypted: bool | None
    tables: int | None
    rows: int | None
    problem: str | None = Field(description="What is wrong with a damaged backup (null when intact).")
    damaged_part: Literal["manifest", "file"] | None
    files: list[str] = Field(description="The files BACKUP_DIR holds of it.")

    @classmethod
    def of(cls, backup: Manifest | Damaged) -> BackupRead:
        if isinstance(backup, Damaged):
            return cls(
                name=backup.name,
                kind=backup.kind,
                created_at=backup.created_at,
                state="damaged",
                database=None,
                revision=[],
                size=None,
                encrypted=None,
                tables=None,
                rows=None,
                problem=backup.problem,
                damaged_part="manifest" if backup.part == "manifest" else "file",
                files=list(backup.files),
            )
        return cls(
            name=backup.name,
            kind=backup.kind,
            created_at=backup.created_at,
            state="ok",
            database=backup.database,
            revision=list(backup.revision),
            size=backup.size,
            encrypted=backup.encrypted,
            tables=len(backup.rows),
            rows=backup.total_rows,
            problem=None,
            damaged_part=None,
            files=[f"{backup.name}.json", backup.file],
        )


class BackupList(BaseModel):
    backups: list[BackupRead] = Field(description="Every backup, intact or damaged, newest first.")
    damaged: int = Field(description="How many of them are damaged.")


class BackupVerification(BaseModel):
    """The outcome of restoring a backup into a scratch database and comparing it with its manifest."""

    name: str
    ok: bool
    problems: list[str]
    tables: int
    rows: int

    @classmethod
    def of(cls, result: VerifyResult) -> BackupVerification:
        return cls(
            name=result.name, ok=result.ok, problems=list(result.problems), tables=result.tables, rows=result.rows
        )
