"""The audit events of limits (docs/audit.md)."""

from __future__ import annotations

from datetime import date
from typing import Any

from gatehouse.audit.events import Event


class RateLimitChangedEvent(Event):
    """Rate limits were changed at runtime: each changed rule before and after (null: no limit, or the default),
    and the rules returned to their defaults."""

    action = "rate_limit.changed"
    target_type = "rate_limit"
    changes: dict[str, dict[str, Any]]
    reset: list[str]


class QuotaReservationsRecoveredEvent(Event):
    """A replica died with requests in flight: its reservations were settled from their last checkpoints by the
    replica that noticed first (limits/recovery.py), and the tokens they held released."""

    action = feed_kind = "quota.reservations_recovered"
    target_type = "replica"
    target = "replica"
    replica: str
    reason: str  # "heartbeat stale", "process gone" or "no heartbeat"
    reservations: int
    users: list[int]
    tokens_released: int  # what the reservations held
    tokens_charged: int  # what the recovered requests were counted as having used


class QuotaHoldsReconciledEvent(Event):
    """A counter held tokens that no reservation backs (or fewer than its reservations hold): its holds were set to
    the grants of its reservations (limits/recovery.py)."""

    action = "quota.holds_reconciled"
    target_type = "user"
    target = "user_id"
    user_id: int
    day: date
    before: int
    after: int
