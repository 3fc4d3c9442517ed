"""Routes: /admin/backups (the backups in BACKUP_DIR, damaged ones with their problem) and
/admin/backups/{name}/verify (restore into a scratch database and compare, as `gatehouse backup verify`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.backups.errors import (
    BackupKeyMissing,
    BackupManifestInvalid,
    BackupNameInvalid,
    BackupNotFound,
    BackupToolMissing,
    BackupUnusable,
)
from gatehouse.backups.manifest import inventory
from gatehouse.backups.schemas import BackupList, BackupRead, BackupVerification
from gatehouse.backups.verify import verify_backup
from gatehouse.deps import SettingsDep
from gatehouse.errors import errors

router = APIRouter(prefix="/admin/backups", tags=["backups"])
# The document carries manifest.NAME_RE with the file suffixes find_backup takes off; the service still answers
# 400 backup_name for any other name.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(\.json|\.sqlite\.enc|\.pgdump\.enc|\.sqlite|\.pgdump)?$"
BackupName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=160,
        description="A name from GET /admin/backups.",
        json_schema_extra={"pattern": NAME_PATTERN},
    ),
]


@router.get("", response_model=BackupList, dependencies=[require(Role.MONITOR)])
async def list_backups(settings: SettingsDep) -> BackupList:
    """Every backup in BACKUP_DIR, newest first; a damaged one is listed with what is wrong (as `gatehouse backup
    list`)."""
    found = await inventory(settings)
    return BackupList(backups=[BackupRead.of(b) for b in found.newest_first()], damaged=len(found.damaged))


@router.post(
    "/{name}/verify",
    responses=errors(
        BackupNameInvalid, BackupNotFound, BackupKeyMissing, BackupManifestInvalid, BackupUnusable, BackupToolMissing
    ),
    response_model=BackupVerification,
    dependencies=[require(Role.ADMIN)],
)
async def verify(settings: SettingsDep, name: BackupName) -> BackupVerification:
    """Check a backup end to end (its file against the manifest, then restored into a scratch database and
    compared, as `gatehouse backup verify`): ok, or each problem found; a damaged backup is not ok. Changes
    nothing."""
    return BackupVerification.of(await verify_backup(settings, name))
