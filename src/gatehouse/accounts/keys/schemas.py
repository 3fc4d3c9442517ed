"""Request and response models for API keys."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gatehouse.fields import Text


class KeyCreate(BaseModel):
    name: Text = Field(min_length=1, max_length=100)
    expires_at: AwareDatetime | None = Field(default=None, description="Optional expiry, ISO 8601 with a timezone.")


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(KeyRead):
    key: str = Field(description="The API key itself: shown once, store it now.")


class KeyPage(BaseModel):
    items: list[KeyRead] = Field(description="Keys, newest first (never the keys themselves: only prefixes).")
    next_cursor: int | None = Field(description="Pass as `before` for the next page; null on the last page.")
