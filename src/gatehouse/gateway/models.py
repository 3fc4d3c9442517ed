"""The request log: one row per gateway request, written in batches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class RequestLog(Base):
    __tablename__ = "request_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    key_id: Mapped[int | None] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(32))  # chat | embeddings
    protocol: Mapped[str] = mapped_column(String(16))  # openai | ollama | anthropic (the client's)
    # chat | responses | messages | completions | ollama_chat | generate | embeddings (the client's API)
    surface: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    upstream: Mapped[str | None] = mapped_column(String(100))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status_code: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    usage_reported: Mapped[bool] = mapped_column(Boolean, default=True)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column()
    # What the request cost, in billionths of the price table's currency, at the price of its time; None when its
    # model has no price (it then costs 0, and reports flag it).
    cost_nanos: Mapped[int | None] = mapped_column(BigInteger)


Index("ix_request_log_user_created", RequestLog.user_id, RequestLog.created_at)
