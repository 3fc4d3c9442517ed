"""Alert errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import Conflict


class WebhookNotConfigured(Conflict):
    """ALERT_WEBHOOK_URL is not set where the test was asked: set it and ALERT_WEBHOOK_SECRET, restart, test again."""

    code = "alert_webhook_not_configured"
