"""Upstreams as stored rows: provisioned through the API, or seeded from GATEHOUSE_CONFIG and the env."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class UpstreamRow(Base):
    """One upstream server; its health lives in each replica's memory, its override here (shared)."""

    __tablename__ = "upstream"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # ollama | openai | anthropic
    base_url: Mapped[str] = mapped_column(String(2000))
    # Stored only for upstreams created through the API; a file- or env-seeded one keeps its key where it is.
    api_key: Mapped[str] = mapped_column(Text, default="")
    api_key_env: Mapped[str] = mapped_column(String(200), default="")
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    discover: Mapped[bool] = mapped_column(Boolean, default=True)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    connect_timeout: Mapped[float | None] = mapped_column(Float)
    read_timeout: Mapped[float | None] = mapped_column(Float)
    max_connections: Mapped[int] = mapped_column(Integer, default=256)
    source: Mapped[str] = mapped_column(String(16), default="api")  # api | config (GATEHOUSE_CONFIG or env)
    override_state: Mapped[str | None] = mapped_column(String(8))  # up | down | drain
    override_reason: Mapped[str | None] = mapped_column(String(500))
    override_by: Mapped[str | None] = mapped_column(String(320))
    override_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
