"""The backups' job: `backup` on BACKUP_SCHEDULE (encrypted when BACKUP_KEY is set), BACKUP_KEEP generations.

A run fails, after taking its backup, while BACKUP_DIR holds a damaged backup: a failed backup run is what the
job metrics and alerts (GatehouseJobFailed, then GatehouseJobOverdue) watch, so the damage is never only a line
in a log. It fails again at every run until a person has looked at the damaged backup and moved it away.
"""

from __future__ import annotations

from typing import Any

from gatehouse.core.logging import get_logger
from gatehouse.core.schedule import parse_schedule
from gatehouse.jobs.job import Job, JobContext
from gatehouse.settings import Settings

log = get_logger("gatehouse.backup")


class DamagedBackupsFound(Exception):
    """BACKUP_DIR holds damaged backups (the new backup was taken); the message names each and what is wrong."""


async def _backup(context: JobContext) -> dict[str, Any]:
    # Imported when a backup runs: the backup machinery (cryptography, the database tools) is not needed to serve.
    from gatehouse.backups.create import create_backup
    from gatehouse.backups.manifest import inventory

    settings = context.settings
    manifest = await create_backup(settings, encrypt=bool(settings.backup_key.get_secret_value()))
    damaged = (await inventory(settings)).damaged
    if damaged:
        for backup in damaged:
            log.warning("backup_damaged", name=backup.name, problem=backup.problem)
        listed = "; ".join(f"{backup.name}: {backup.problem}" for backup in damaged)
        raise DamagedBackupsFound(
            f"backup {manifest.name} was taken, but {len(damaged)} backup(s) in {settings.backup_dir} are damaged "
            f"(`gatehouse backup list`; RUNBOOK, Backups and restore, says what to do): {listed}"
        )
    return manifest.counts()


def backup_job(settings: Settings) -> Job:
    """The `backup` job."""
    return Job(
        "backup",
        f"Backs the database up into BACKUP_DIR, keeping {settings.backup_keep} generations"
        + (", encrypted (BACKUP_KEY)." if settings.backup_key.get_secret_value() else ", unencrypted.")
        + " Fails while a backup there is damaged.",
        _backup,
        parse_schedule(settings.backup_schedule) if settings.backup_schedule else None,
    )
