"""The audit log: one row per state change or security event, hash-chained."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    """Who did what, when, from where; `hash` chains each row to the one before it."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))  # user | key | system | job | anonymous
    actor_id: Mapped[int | None] = mapped_column(Integer)  # the user acting (through a session or a key)
    actor_key_id: Mapped[int | None] = mapped_column(Integer)
    actor_label: Mapped[str | None] = mapped_column(String(320))  # email (or job name) at the time
    client_ip: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON
    request_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


Index("ix_audit_event_action_id", AuditEvent.action, AuditEvent.id)
Index("ix_audit_event_actor_id", AuditEvent.actor_id, AuditEvent.id)
Index("ix_audit_event_target", AuditEvent.target_type, AuditEvent.target_id, AuditEvent.id)
Index("ix_audit_event_created_at", AuditEvent.created_at)


class AuditHead(Base):
    """The newest row of the chain (one row, id 1): appends lock it, and verify checks the chain ends here."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
