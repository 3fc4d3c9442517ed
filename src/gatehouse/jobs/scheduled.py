"""What the retention purge removes of the jobs' own data (finished runs past REQUEST_LOG_RETENTION_DAYS, replica
heartbeats a day stale), and of the audit log, which sits below the jobs: events older than AUDIT_RETENTION_DAYS,
the oldest prefix of the hash chain, in batches, each anchored by a chained `audit.purged` event
(audit/service.py purge_before), so `gatehouse audit verify` still passes after it."""

from __future__ import annotations

import asyncio
from typing import Any

from gatehouse.audit.service import purge_before
from gatehouse.jobs.models import JobRun
from gatehouse.jobs.purge import PurgeContext, delete_in_batches
from gatehouse.jobs.replicas import forget_stale

AUDIT_BATCH = 20000  # events per purge transaction, each anchored by its own audit.purged event


async def purge_job_runs(context: PurgeContext) -> dict[str, Any]:
    """Finished runs older than REQUEST_LOG_RETENTION_DAYS (0: kept forever)."""
    cutoff = context.cutoff(context.settings.request_log_retention_days)
    if cutoff is None:
        return {}
    where = (JobRun.started_at < cutoff) & (JobRun.status != "running")
    return {"job_runs": await delete_in_batches(context.sessionmaker, JobRun.id, where)}


async def forget_stale_replicas(context: PurgeContext) -> dict[str, Any]:
    """Heartbeats of processes gone for more than a day."""
    async with context.sessionmaker() as session, session.begin():
        return {"stale_replicas": await forget_stale(session, context.now)}


async def purge_audit(context: PurgeContext) -> dict[str, Any]:
    """Audit events past AUDIT_RETENTION_DAYS (0: kept forever)."""
    cutoff = context.cutoff(context.settings.audit_retention_days)
    if cutoff is None:
        return {}
    removed = 0
    while True:
        async with context.sessionmaker() as session, session.begin():
            purged = await purge_before(session, cutoff=cutoff, actor=context.actor, limit=AUDIT_BATCH)
        removed += purged.removed
        if purged.removed < AUDIT_BATCH:
            break
        await asyncio.sleep(0)
    return {"audit_events": removed, "audit_before": cutoff.isoformat()}
