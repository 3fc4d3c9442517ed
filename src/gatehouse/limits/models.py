"""Daily usage counters (quotas) and persisted rate-limit overrides."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Integer, String
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
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RateLimitOverride(Base):
    """An operator's value for a named rate limit (absent: the default from settings applies)."""

    __tablename__ = "rate_limit_override"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    limit: Mapped[int | None] = mapped_column(Integer)  # None: no limit
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = mapped_column(Integer)
