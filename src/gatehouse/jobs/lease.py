"""The job lock: one `job_lock` row per job, taken, renewed and released with single conditional UPDATEs.

It works alike on SQLite and PostgreSQL, and a crashed holder's lease simply runs out instead of blocking the job
forever. A scheduled run also names its slot (the scheduled time, the same on every replica), and the same
UPDATE takes the slot only if no replica took it already: with any number of replicas, each slot runs once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.core.metrics import JOB_RUNS
from gatehouse.jobs.models import JobLock, JobRun

LEASE_SECONDS = 60.0  # a holder renews its lease every LEASE_SECONDS / 4 while the job runs


@dataclass(frozen=True)
class Holder:
    """Who holds a job's lock right now."""

    replica: str
    run_id: int | None
    since: datetime | None


async def ensure_row(session: AsyncSession, name: str, *, last_slot: datetime | None = None) -> None:
    """The job's lock row exists (created free, with `last_slot`, when it did not)."""
    builder = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        builder(JobLock).values(name=name, last_slot=last_slot).on_conflict_do_nothing(index_elements=["name"])
    )


async def take(
    session: AsyncSession, name: str, *, replica: str, now: datetime, lease: timedelta, slot: datetime | None
) -> bool:
    """Take the lock (a free one, or a lease that ran out) and, for a scheduled run, its slot if still open."""
    taken = update(JobLock).where(JobLock.name == name, (JobLock.holder.is_(None)) | (JobLock.expires_at < now))
    values: dict[str, Any] = {"holder": replica, "acquired_at": now, "expires_at": now + lease}
    if slot is not None:
        taken = taken.where(JobLock.last_slot.is_(None) | (JobLock.last_slot < slot))
        values["last_slot"] = slot
    result = await session.execute(taken.values(**values))
    return bool(getattr(result, "rowcount", 0))


async def attach_run(session: AsyncSession, name: str, *, replica: str, run_id: int) -> None:
    """Name the run holding the lock (so a replica finding the lease run out can say which run was abandoned)."""
    await session.execute(update(JobLock).where(JobLock.name == name, JobLock.holder == replica).values(run_id=run_id))


async def renew(session: AsyncSession, name: str, *, replica: str, run_id: int, until: datetime) -> bool:
    """Extend the lease; False when it is no longer ours (it ran out and another replica took it)."""
    result = await session.execute(
        update(JobLock)
        .where(JobLock.name == name, JobLock.holder == replica, JobLock.run_id == run_id)
        .values(expires_at=until)
    )
    return bool(getattr(result, "rowcount", 0))


async def release(session: AsyncSession, name: str, *, replica: str, run_id: int) -> None:
    """Free the lock, if this run still holds it."""
    await session.execute(
        update(JobLock)
        .where(JobLock.name == name, JobLock.holder == replica, JobLock.run_id == run_id)
        .values(holder=None, expires_at=None, run_id=None)
    )


async def fail_abandoned(session: AsyncSession, name: str, now: datetime) -> None:
    """A lease that ran out: its holder died mid-run. Say so on that run, rather than leave it 'running'."""
    lock = (
        await session.execute(select(JobLock).where(JobLock.name == name, JobLock.expires_at < now))
    ).scalar_one_or_none()
    if lock is None or lock.holder is None or lock.run_id is None:
        return
    result = await session.execute(
        update(JobRun)
        .where(JobRun.id == lock.run_id, JobRun.status == "running")
        .values(
            status="failed",
            finished_at=lock.expires_at,
            error=f"abandoned: replica {lock.holder} stopped renewing its lease before the job finished",
        )
    )
    if getattr(result, "rowcount", 0):
        JOB_RUNS.labels(job_name=name, status="failed").inc()


async def holder(session: AsyncSession, name: str, now: datetime) -> Holder | None:
    """Who holds the job's lock now (None: nobody, or a lease that ran out)."""
    lock = await session.get(JobLock, name, populate_existing=True)
    if lock is None or lock.holder is None or (lock.expires_at is not None and lock.expires_at < now):
        return None
    return Holder(lock.holder, lock.run_id, lock.acquired_at)


async def slot_open(session: AsyncSession, name: str, slot: datetime) -> bool:
    """Whether no replica has run (or is running) `slot` yet: one read, so idle ticks write nothing."""
    last = (await session.execute(select(JobLock.last_slot).where(JobLock.name == name))).scalar_one_or_none()
    return last is None or last < slot


async def record_first_slot(session: AsyncSession, name: str, current: datetime) -> None:
    """On a database seen for the first time (or a lock row made by a manual run before the job had a schedule),
    only record the current slot: a schedule starts from now, it does not catch up on the past."""
    await ensure_row(session, name, last_slot=current)
    await session.execute(
        update(JobLock).where(JobLock.name == name, JobLock.last_slot.is_(None)).values(last_slot=current)
    )
