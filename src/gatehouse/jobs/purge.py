"""The retention purge: what is past its retention period is removed, and nothing else.

Each domain says what of its own data expires (its scheduled.py: audit events, request-log rows, stored responses,
ops samples, job runs, expired sessions and invites, stale replicas, this process's empty rate-limit windows); the
purge job runs those steps in order and reports what each removed. Large deletes go in batches
(`delete_in_batches`), each its own short transaction, so a purge of millions of rows never holds SQLite's write
lock (or PostgreSQL row locks) for long while the gateway serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from gatehouse.auth.actor import Actor
from gatehouse.core.schedule import parse_schedule
from gatehouse.db.base import utcnow
from gatehouse.jobs.job import Job, JobContext
from gatehouse.settings import Settings

DELETE_BATCH = 5000


@dataclass(frozen=True)
class PurgeContext:
    """What a purge step gets: the settings, a database, who runs the purge, and its one `now`."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    actor: Actor
    now: datetime

    def cutoff(self, days: int) -> datetime | None:
        """What is older than this is past a retention of `days` (None: 0 days, kept forever)."""
        return self.now - timedelta(days=days) if days else None


PurgeStep = Callable[[PurgeContext], Awaitable[dict[str, Any]]]  # returns what it removed, by kind


async def delete_in_batches(
    sessionmaker: async_sessionmaker[AsyncSession], id_column: InstrumentedAttribute[Any], where: ColumnElement[bool]
) -> int:
    """Delete the rows matching `where`, DELETE_BATCH at a time (oldest ids first); how many were deleted."""
    removed = 0
    while True:
        batch = select(id_column).where(where).order_by(id_column).limit(DELETE_BATCH).scalar_subquery()
        async with sessionmaker() as session, session.begin():
            result = await session.execute(delete(id_column.class_).where(id_column.in_(batch)))
        count = int(getattr(result, "rowcount", 0) or 0)
        removed += count
        if count < DELETE_BATCH:
            return removed
        await asyncio.sleep(0)  # let the gateway's own writes in between batches


async def purge(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    actor: Actor,
    steps: Sequence[PurgeStep],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run every step with one `now`; what each removed, by kind."""
    context = PurgeContext(settings, sessionmaker, actor, now or utcnow())
    counts: dict[str, Any] = {}
    for step in steps:
        counts.update(await step(context))
    return counts


def purge_job(settings: Settings, steps: Sequence[PurgeStep]) -> Job:
    """The `purge` job, on PURGE_SCHEDULE, with these steps."""

    async def run(context: JobContext) -> dict[str, Any]:
        return await purge(context.settings, context.sessionmaker, actor=context.actor, steps=steps)

    return Job(
        "purge",
        "Removes audit events, request-log rows and other data past retention "
        f"(AUDIT_RETENTION_DAYS={settings.audit_retention_days}, "
        f"REQUEST_LOG_RETENTION_DAYS={settings.request_log_retention_days}, "
        f"RESPONSES_RETENTION_DAYS={settings.responses_retention_days}; 0 keeps forever).",
        run,
        parse_schedule(settings.purge_schedule) if settings.purge_schedule else None,
    )
