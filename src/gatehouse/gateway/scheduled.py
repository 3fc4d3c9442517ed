"""What the retention purge removes of the gateway's data: request-log rows past REQUEST_LOG_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

from gatehouse.gateway.models import RequestLog
from gatehouse.jobs.purge import PurgeContext, delete_in_batches


async def purge_request_log(context: PurgeContext) -> dict[str, Any]:
    """Request-log rows older than REQUEST_LOG_RETENTION_DAYS (0: kept forever)."""
    cutoff = context.cutoff(context.settings.request_log_retention_days)
    if cutoff is None:
        return {}
    rows = await delete_in_batches(context.sessionmaker, RequestLog.id, RequestLog.created_at < cutoff)
    return {"request_log_rows": rows, "request_log_before": cutoff.isoformat()}
