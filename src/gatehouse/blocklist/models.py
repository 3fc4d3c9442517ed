"""Blocked networks: a CIDR network (a single address is a /32 or /128) refused on every route but the probes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class BlockedNetwork(Base):
    """One blocked network, in its normal form (`203.0.113.0/24`, `2001:db8::/32`), unique. `reason` is for
    operators only: a refused client is never told it. An entry past `expires_at` no longer blocks and is removed by
    the retention purge."""

    __tablename__ = "blocked_network"

    id: Mapped[int] = mapped_column(primary_key=True)
    network: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[int | None] = mapped_column(Integer)  # the user's id; None: the CLI or the system
    created_by_label: Mapped[str | None] = mapped_column(String(320))  # their email, or `cli`, as audit shows it
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
