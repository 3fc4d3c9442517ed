"""The audit events of alerts (docs/audit.md). Alerts themselves are not audited: they change nothing, and each is
its own record (`budget_alert`); their configuration is settings."""

from __future__ import annotations

from gatehouse.audit.events import Event


class AlertWebhookTestedEvent(Event):
    """Someone sent a test webhook to ALERT_WEBHOOK_URL: where to (its scheme and host only), and what came of it."""

    action = "alert.webhook_tested"
    target_type = "webhook"
    target = "webhook"
    webhook: str  # the URL's scheme and host: its path may be a secret
    event_id: str
    delivered: bool
    status_code: int | None
    error: str | None
