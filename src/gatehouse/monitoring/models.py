"""Stored operational samples: what a replica measured, kept so snapshots survive restarts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class OpsSample(Base):
    """One replica's database statement count and total time over one interval (about a minute)."""

    __tablename__ = "ops_sample"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    replica: Mapped[str] = mapped_column(String(64))
    statements: Mapped[int] = mapped_column(BigInteger, default=0)
    statement_seconds: Mapped[float] = mapped_column(Float, default=0.0)
