"""What the retention purge removes of alerts: those older than REQUEST_LOG_RETENTION_DAYS whose period is over
(an alert of a period still running stays, or its threshold would alert again), with their deliveries."""

from __future__ import annotations

from typing import Any

from gatehouse.alerts.models import BudgetAlert
from gatehouse.jobs.purge import PurgeContext, delete_in_batches
from gatehouse.limits.budgets import period_start


async def purge_alerts(context: PurgeContext) -> dict[str, Any]:
    """Alerts past REQUEST_LOG_RETENTION_DAYS (0: kept forever) of periods that started before this month."""
    cutoff = context.cutoff(context.settings.request_log_retention_days)
    if cutoff is None:
        return {}
    month = period_start(context.settings.quota_timezone, "m", context.now)
    over = (BudgetAlert.created_at < cutoff) & (BudgetAlert.start < month)
    return {"budget_alerts": await delete_in_batches(context.sessionmaker, BudgetAlert.id, over)}
