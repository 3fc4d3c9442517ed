"""Backups: scheduled, encrypted, and the newest one recent and intact (its file's size and SHA-256 against its
manifest; a full restore test is `gatehouse backup verify`)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta

from gatehouse.backups.manifest import Damaged, inventory, size_problem
from gatehouse.backups.stored import sha256_file
from gatehouse.cli.doctor_checks.report import Check, failed, passed, skipped, warned
from gatehouse.core.schedule import parse_schedule
from gatehouse.settings import Settings

HASH_LIMIT = 2 * 1024**3  # larger backup files have only their size checked here (hashing would take too long)
UNSCHEDULED_MAX_AGE = timedelta(days=2)  # without BACKUP_SCHEDULE, how old the newest backup may be


async def backup_checks(settings: Settings) -> list[Check]:
    """The schedule, the key, the tools a PostgreSQL backup needs, and the newest backup in BACKUP_DIR."""
    return [_schedule(settings), _key(settings), _tools(settings), await _newest(settings)]


PG_TOOLS = ("pg_dump", "pg_restore", "psql")  # backup, restore, verify (backups/postgres.py)


def _tools(settings: Settings) -> Check:
    name = "backups.tools"
    if settings.is_sqlite:
        return skipped(name, "SQLite: backups need no outside tool")
    missing = [tool for tool in PG_TOOLS if shutil.which(tool) is None]
    if missing:
        return failed(
            name,
            f"{', '.join(missing)} not found in PATH: PostgreSQL backups, verifies and restores will fail",
            "install the PostgreSQL client tools of the server's major version or newer (`apt-get install "
            "postgresql-client`; the Gatehouse image has them)",
        )
    return passed(name, f"{', '.join(PG_TOOLS)} found")


def _schedule(settings: Settings) -> Check:
    if settings.backup_schedule:
        return passed("backups.schedule", f"BACKUP_SCHEDULE={settings.backup_schedule}")
    return warned(
        "backups.schedule",
        "BACKUP_SCHEDULE is not set: no scheduled backups (unless an external scheduler runs the backup job)",
        "set BACKUP_SCHEDULE, e.g. daily@03:00, or run POST /admin/jobs/backup/run from a CronJob with X-Job-Token",
    )


def _key(settings: Settings) -> Check:
    if settings.backup_key.get_secret_value():
        return passed("backups.key", "BACKUP_KEY is set: backups can be encrypted")
    summary = "BACKUP_KEY is not set: backups are stored unencrypted"
    fix = "set BACKUP_KEY (or BACKUP_KEY_FILE) to 16+ random characters and keep a copy off this host"
    return warned("backups.key", summary, fix) if settings.is_prod else skipped("backups.key", summary)


def _max_age(settings: Settings) -> timedelta:
    if settings.backup_schedule:
        return 2 * parse_schedule(settings.backup_schedule).period
    return UNSCHEDULED_MAX_AGE


async def _newest(settings: Settings) -> Check:
    name = "backups.newest"
    found = (await inventory(settings)).newest_first()
    if not found:
        summary = f"no backup in BACKUP_DIR ({settings.backup_dir})"
        fix = "run `gatehouse backup create`, and schedule backups (BACKUP_SCHEDULE)"
        return failed(name, summary, fix) if settings.is_prod else warned(name, summary, fix)
    newest = found[0]
    if isinstance(newest, Damaged):
        return failed(
            name,
            f"the newest backup {newest.name} is damaged: {newest.problem}",
            "run `gatehouse backup create` now, then find out what damaged it (`gatehouse backup list`)",
        )
    age = datetime.now(UTC) - newest.created_at
    limit = _max_age(settings)
    path = settings.backup_dir / newest.file
    problem: str | None
    if not await asyncio.to_thread(path.exists):
        problem = f"its file {newest.file} is missing"
    elif (size := (await asyncio.to_thread(path.stat)).st_size) > HASH_LIMIT:
        problem = size_problem(newest, size)
    else:
        size, sha = await asyncio.to_thread(sha256_file, path)
        problem = size_problem(newest, size) or (
            None if sha == newest.sha256 else "its file's SHA-256 does not match the manifest: the file is corrupted"
        )
    if problem:
        return failed(
            name,
            f"the newest backup {newest.name} is damaged: {problem}",
            "run `gatehouse backup create` now, then `gatehouse backup verify` the older ones",
        )
    when = f"{newest.name}, {_hours(age)} old"
    if age > limit:
        return failed(
            name,
            f"the newest backup is stale: {when} (more than {_hours(limit)})",
            "run `gatehouse backup create`, and check the backup job (`gatehouse jobs list`) and BACKUP_SCHEDULE",
        )
    checked = "size checked" if size > HASH_LIMIT else "checksum verified"
    return passed(name, f"newest backup {when}, {checked} against its manifest")


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
