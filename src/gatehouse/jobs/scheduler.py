"""A job's schedule, followed by every replica: each wakes at the job's slots (UTC) and tries to run the slot; the
lock (jobs/lease.py) lets exactly one replica take it. A slot missed while no replica was up runs at the next
start; a database seen for the first time only records the current slot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.core.logging import get_logger
from gatehouse.jobs import lease
from gatehouse.jobs.job import Job
from gatehouse.jobs.models import JobRun

log = get_logger("gatehouse.jobs")
SCHEDULER_TICK_SECONDS = 60.0  # the longest a scheduler sleeps before looking at the clock again
RETRY_SECONDS = 30.0  # a slot found locked by a manual run is tried again after this long

RunSlot = Callable[[Job, datetime], Awaitable[JobRun | None]]  # None: another replica has (or holds) the slot


def error_text(exc: BaseException, limit: int = 1000) -> str:
    """An error as a run records it: its class and message, bounded."""
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"[:limit] if message else type(exc).__name__


async def follow(
    job: Job,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime],
    run_slot: RunSlot,
) -> None:
    """Run `job` at each of its slots until cancelled."""
    schedule = job.schedule
    if schedule is None:
        raise ValueError(f"job {job.name} has no schedule")
    while True:
        try:
            async with sessionmaker() as session, session.begin():
                await lease.record_first_slot(session, job.name, schedule.latest(clock()))
            break
        except Exception as exc:
            log.warning("job_schedule_failed", job=job.name, error=error_text(exc))
            await asyncio.sleep(RETRY_SECONDS)
    while True:
        now = clock()
        slot = schedule.latest(now)
        wait = min((schedule.next_after(now) - now).total_seconds(), SCHEDULER_TICK_SECONDS)
        try:
            if await _slot_open(sessionmaker, job.name, slot):
                run = await run_slot(job, slot)
                if run is None and await _slot_open(sessionmaker, job.name, slot):
                    wait = min(wait, RETRY_SECONDS)  # held by a manual run: the slot is still to run
        except Exception as exc:
            log.warning("job_schedule_failed", job=job.name, error=error_text(exc))
            wait = min(wait, RETRY_SECONDS)
        await asyncio.sleep(max(wait, 0.01))


async def _slot_open(sessionmaker: async_sessionmaker[AsyncSession], name: str, slot: datetime) -> bool:
    async with sessionmaker() as session:
        return await lease.slot_open(session, name, slot)
