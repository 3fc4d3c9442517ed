"""Daily usage counters (quotas), persisted rate-limit overrides, and the price table."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class UsageCounter(Base):
    """One user's usage on one quota day: settled messages and tokens, plus tokens reserved by requests in flight."""

    __tablename__ = "usage_counter"

    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # The grant of the latest reservation, so that one UPDATE ... RETURNING tells its request what it got.
    last_grant: Mapped[int] = mapped_column(BigInteger, default=0)
    # Spend, settled and held, in billionths of PRICE_CURRENCY.
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_cost: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BudgetCounter(Base):
    """Usage over one period of every other budget: a user's month, a group's or a key's day or month; kept only
    for those with a quota or spend limit of that period (limits/budgets.py). `key` names it: scope (`u` user, `g`
    group, `k` key), the subject's id, the period (`d` day, `m` month) and its first day, e.g. `g3m20261201`."""

    __tablename__ = "budget_counter"

    key: Mapped[str] = mapped_column(String(48), primary_key=True)
    scope: Mapped[str] = mapped_column(String(1))
    subject_id: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(1))
    start: Mapped[date] = mapped_column(Date)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_cost: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class QuotaReservation(Base):
    """One admitted request's hold on a usage counter, until it settles: which replica holds it, what it was
    granted, and its progress as last checkpointed (limits/quotas.py). A replica that dies leaves its rows
    behind; whichever replica notices first settles them from these checkpoints (limits/recovery.py)."""

    __tablename__ = "quota_reservation"

    # Random 63-bit ids (no sequence to share between replicas), and no index but the key: the table only ever
    # holds the requests in flight, and each index would be one more B-tree written twice per request.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[date] = mapped_column(Date)
    replica: Mapped[str] = mapped_column(String(64))
    messages: Mapped[int] = mapped_column(Integer, default=0)
    granted: Mapped[int] = mapped_column(BigInteger, default=0)  # tokens held on the counter
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # an estimate until the upstream reports it
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # as of the last checkpoint
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checkpoint_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What it holds in money on each of its counters (billionths of PRICE_CURRENCY), the budget counters it holds
    # beside the user's day (their keys, comma-separated; empty: none), and the price it was reserved at (per
    # million tokens, in millionths; None: unpriced), so a recovery settles its cost as its replica would have.
    cost: Mapped[int] = mapped_column(BigInteger, default=0)
    budgets: Mapped[str] = mapped_column(String(1000), default="")
    input_micros: Mapped[int | None] = mapped_column(BigInteger)
    output_micros: Mapped[int | None] = mapped_column(BigInteger)


class RateLimitOverride(Base):
    """An operator's value for a named rate limit (absent: the default from settings applies)."""

    __tablename__ = "rate_limit_override"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    limit: Mapped[int | None] = mapped_column(Integer)  # None: no limit
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = mapped_column(Integer)


class ModelPrice(Base):
    """One version of a model's price: from `effective_from` on, until a later version of the same model. Rows
    are never changed: a price change adds a version (a removal is a version without prices), so a request keeps
    the price of its time. Prices are per million tokens, in millionths of `currency` (exact integers)."""

    __tablename__ = "model_price"

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200))  # a model name as clients use it, or a `*` pattern
    currency: Mapped[str] = mapped_column(String(3))
    input_micros: Mapped[int | None] = mapped_column(BigInteger)  # None: this version removes the price
    output_micros: Mapped[int | None] = mapped_column(BigInteger)
    cached_input_micros: Mapped[int | None] = mapped_column(BigInteger)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))  # config | api
    created_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


Index("ix_model_price_model_effective", ModelPrice.model, ModelPrice.effective_from)


Index("ix_budget_counter_subject", BudgetCounter.scope, BudgetCounter.subject_id, BudgetCounter.start)
