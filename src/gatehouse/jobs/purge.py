"""The retention purge: what is past its retention period is removed, and nothing else.

- audit events older than AUDIT_RETENTION_DAYS: the oldest prefix of the hash chain, anchored by a chained
  `audit.purged` event, so `gatehouse audit verify` still passes (audit/service.py purge_before);
- request-log rows, ops samples and job runs older than REQUEST_LOG_RETENTION_DAYS;
- console sessions and invites past their expiry, replica heartbeats a day stale;
- this process's stale rate-limit windows (Redis windows expire by themselves).

Large deletes go in batches (DELETE_BATCH rows; AUDIT_BATCH audit events, each batch anchored by its own
`audit.purged` event), each its own short transaction, so a purge of millions of rows never holds SQLite's
write lock (or PostgreSQL row locks, or the audit head) for long while the gateway serves.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from gatehouse.accounts.invite_models import Invite
from gatehouse.audit.service import purge_before
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import UserSession
from gatehouse.db.base import utcnow
from gatehouse.gateway.models import RequestLog
from gatehouse.jobs.models import JobRun, ReplicaBeat
from gatehouse.jobs.replicas import FORGET_SECONDS
from gatehouse.limits.ratelimit import RateLimiter
from gatehouse.monitoring.models import OpsSample
from gatehouse.settings import Settings

DELETE_BATCH = 5000
AUDIT_BATCH = 20000  # events per purge transaction, each anchored by its own audit.purged event


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
    rate_limiter: RateLimiter | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Remove everything past retention; the counts of what was removed, by kind."""
    now = now or utcnow()
    counts: dict[str, Any] = {}
    if settings.audit_retention_days:
        cutoff = now - timedelta(days=settings.audit_retention_days)
        removed = 0
        while True:
            async with sessionmaker() as session, session.begin():
                purged = await purge_before(session, cutoff=cutoff, actor=actor, limit=AUDIT_BATCH)
            removed += purged.removed
            if purged.removed < AUDIT_BATCH:
                break
            await asyncio.sleep(0)
        counts["audit_events"] = removed
        counts["audit_before"] = cutoff.isoformat()
    if settings.request_log_retention_days:
        cutoff = now - timedelta(days=settings.request_log_retention_days)
        counts["request_log_rows"] = await delete_in_batches(
            sessionmaker, RequestLog.id, RequestLog.created_at < cutoff
        )
        counts["ops_samples"] = await delete_in_batches(sessionmaker, OpsSample.id, OpsSample.created_at < cutoff)
        counts["job_runs"] = await delete_in_batches(
            sessionmaker, JobRun.id, (JobRun.started_at < cutoff) & (JobRun.status != "running")
        )
        counts["request_log_before"] = cutoff.isoformat()
    counts["expired_sessions"] = await delete_in_batches(sessionmaker, UserSession.id, UserSession.expires_at < now)
    counts["expired_invites"] = await delete_in_batches(
        sessionmaker, Invite.id, Invite.expires_at.is_not(None) & (Invite.expires_at < now)
    )
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            delete(ReplicaBeat).where(ReplicaBeat.seen_at < now - timedelta(seconds=FORGET_SECONDS))
        )
    counts["stale_replicas"] = int(getattr(result, "rowcount", 0) or 0)
    counts["rate_limit_windows"] = rate_limiter.sweep() if rate_limiter is not None else 0
    return counts
