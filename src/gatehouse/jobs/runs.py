"""Recorded runs: every run of a job is a `job_run` row (start, end, status, counts, error)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.jobs.models import JobRun


async def list_runs(
    session: AsyncSession, *, job: str | None = None, before_id: int | None = None, limit: int = 50
) -> Sequence[JobRun]:
    """Recorded runs, newest first, optionally of one job, before a cursor."""
    query = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
    if job:
        query = query.where(JobRun.job == job)
    if before_id is not None:
        query = query.where(JobRun.id < before_id)
    return (await session.execute(query)).scalars().all()


async def last_runs(session: AsyncSession) -> dict[str, JobRun]:
    """The newest run of each job."""
    newest = select(JobRun.job, func.max(JobRun.id).label("id")).group_by(JobRun.job).subquery()
    rows = (await session.execute(select(JobRun).join(newest, JobRun.id == newest.c.id))).scalars()
    return {run.job: run for run in rows}


async def last_successes(session: AsyncSession) -> list[tuple[str, datetime | None]]:
    """When each job last finished successfully."""
    query = select(JobRun.job, func.max(JobRun.finished_at)).where(JobRun.status == "ok").group_by(JobRun.job)
    return [(name, finished) for name, finished in (await session.execute(query)).all()]
