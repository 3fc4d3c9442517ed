"""A stored response: one row per Responses API answer created with `store`, kept per user."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow

ID_LENGTH = 100  # a Responses id (`resp_...`), as the gateway generates it


class StoredResponse(Base):
    """What a follow-up needs: the items the request sent, and the Response object the client got."""

    __tablename__ = "stored_response"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    key_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    previous_response_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # each with its "id"
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the whole Response object, as answered


Index("ix_stored_response_user_created", StoredResponse.user_id, StoredResponse.created_at)
