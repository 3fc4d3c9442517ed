"""The audit events of limits (docs/audit.md)."""

from __future__ import annotations

from typing import Any

from gatehouse.audit.events import Event


class RateLimitChangedEvent(Event):
    """Rate limits were changed at runtime: each changed rule before and after (null: no limit, or the default),
    and the rules returned to their defaults."""

    action = "rate_limit.changed"
    target_type = "rate_limit"
    changes: dict[str, dict[str, Any]]
    reset: list[str]
