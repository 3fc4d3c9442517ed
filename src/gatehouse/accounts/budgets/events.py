"""The audit event of budgets: a subject's limits changed (docs/audit.md)."""

from __future__ import annotations

from typing import Any

from gatehouse.audit.events import Event


class BudgetLimitsChangedEvent(Event):
    """A user's, group's or key's quotas or spend limits changed: each changed limit before and after (null: none;
    spend in PRICE_CURRENCY, as a decimal string)."""

    action = "budget.limits_changed"
    target_type = "budget"
    target = "subject"
    subject: str  # "user:3", "group:2", "key:7"
    changes: dict[str, dict[str, Any]]
