"""The backups' job: `backup` on BACKUP_SCHEDULE (encrypted when BACKUP_KEY is set), BACKUP_KEEP generations."""

from __future__ import annotations

from typing import Any

from gatehouse.core.schedule import parse_schedule
from gatehouse.jobs.job import Job, JobContext
from gatehouse.settings import Settings


async def _backup(context: JobContext) -> dict[str, Any]:
    # Imported when a backup runs: the backup machinery (cryptography, the database tools) is not needed to serve.
    from gatehouse.backups.create import create_backup

    settings = context.settings
    manifest = await create_backup(settings, encrypt=bool(settings.backup_key.get_secret_value()))
    return manifest.counts()


def backup_job(settings: Settings) -> Job:
    """The `backup` job."""
    return Job(
        "backup",
        f"Backs the database up into BACKUP_DIR, keeping {settings.backup_keep} generations"
        + (", encrypted (BACKUP_KEY)." if settings.backup_key.get_secret_value() else ", unencrypted."),
        _backup,
        parse_schedule(settings.backup_schedule) if settings.backup_schedule else None,
    )
