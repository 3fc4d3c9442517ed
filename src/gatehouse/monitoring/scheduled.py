"""What the retention purge removes of the stored samples: those past REQUEST_LOG_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

from gatehouse.jobs.purge import PurgeContext, delete_in_batches
from gatehouse.monitoring.models import OpsSample


async def purge_ops_samples(context: PurgeContext) -> dict[str, Any]:
    """Statement samples older than REQUEST_LOG_RETENTION_DAYS (0: kept forever), like the request log they
    explain."""
    cutoff = context.cutoff(context.settings.request_log_retention_days)
    if cutoff is None:
        return {}
    return {"ops_samples": await delete_in_batches(context.sessionmaker, OpsSample.id, OpsSample.created_at < cutoff)}
