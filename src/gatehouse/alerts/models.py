"""Alerts raised and their webhook deliveries; and the indexes that keep the watcher's query on current periods."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow
from gatehouse.limits.models import BudgetCounter, UsageCounter


class BudgetAlert(Base):
    """One budget's crossing of one threshold in one period. The unique constraint is what makes an alert happen
    once: every replica's watcher may notice the crossing, only the one whose insert succeeds announces it."""

    __tablename__ = "budget_alert"
    __table_args__ = (
        UniqueConstraint(
            "scope", "subject_id", "period", "start", "measure", "threshold", name="uq_budget_alert_crossing"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(1))  # u user, g group, k key (as budget_counter)
    subject_id: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(1))  # d day, m month
    start: Mapped[date] = mapped_column(Date)  # the period's first day, in QUOTA_TIMEZONE
    measure: Mapped[str] = mapped_column(String(16))  # messages, tokens, spend
    threshold: Mapped[int] = mapped_column(Integer)  # percent
    # What the budget had used and its limit when the crossing was noticed (spend in billionths of PRICE_CURRENCY).
    used: Mapped[int] = mapped_column(BigInteger)
    limit: Mapped[int] = mapped_column(BigInteger)
    subject_name: Mapped[str] = mapped_column(String(320))  # as it was then: a subject may be renamed or deleted
    replica: Mapped[str] = mapped_column(String(64))  # the replica that recorded it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[str] = mapped_column(Text)  # the webhook body, byte for byte what every attempt sends


class AlertDelivery(Base):
    """An alert's webhook, as delivered so far: updated after every attempt. While `pending`, the replica in
    `claimed_by` delivers it until `lease_until`; after that (the replica died or stopped), any replica takes over."""

    __tablename__ = "alert_delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("budget_alert.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(300))  # the webhook's scheme and host only: its path may be a secret
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status of the last answer (None: none)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


Index("ix_alert_delivery_status_lease", AlertDelivery.status, AlertDelivery.lease_until)
# The watcher reads the counters of the current day and month every few seconds: these keep that a lookup rather
# than a scan of every past day. Neither column is ever updated, so the counters' updates do not touch them.
Index("ix_usage_counter_day", UsageCounter.day)
Index("ix_budget_counter_start", BudgetCounter.start)
