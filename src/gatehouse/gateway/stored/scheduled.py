"""What the retention purge removes of the stored responses: those older than RESPONSES_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

from gatehouse.gateway.stored.models import StoredResponse
from gatehouse.jobs.purge import PurgeContext, delete_in_batches


async def purge_stored_responses(context: PurgeContext) -> dict[str, Any]:
    """Stored responses older than RESPONSES_RETENTION_DAYS (0: kept forever)."""
    cutoff = context.cutoff(context.settings.responses_retention_days)
    if cutoff is None:
        return {}
    rows = await delete_in_batches(context.sessionmaker, StoredResponse.id, StoredResponse.created_at < cutoff)
    return {"stored_responses": rows, "stored_responses_before": cutoff.isoformat()}
