"""Request and response models for users: the profile, and their administration."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from gatehouse.accounts.groups.schemas import GroupRef
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.fields import Count, SmallCount, Text


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    display_name: str
    role: Role
    status: UserStatus
    created_at: datetime
    last_login_at: datetime | None = None
    messages_per_day: int | None = Field(default=None, description="Daily message quota; null: unlimited.")
    tokens_per_day: int | None = Field(default=None, description="Daily token quota; null: unlimited.")


class MeRead(UserRead):
    groups: list[GroupRef] = Field(default_factory=list, description="The groups the caller belongs to, by name.")


class UserCreate(BaseModel):
    email: EmailStr
    role: Role = Role.USER
    password: str | None = Field(
        default=None, min_length=8, max_length=1024, description="Optional: a user without one can only use API keys."
    )
    display_name: Text = Field(default="", max_length=200)


class UserAdminRead(UserRead):
    blocked: bool = False
    blocked_at: datetime | None = None
    blocked_until: datetime | None = None
    block_reason: str | None = Field(default=None, description="Internal note; never shown to the user.")
    messages_today: int = 0
    tokens_today: int = 0
    messages_percent: float | None = None
    tokens_percent: float | None = None


class UserPage(BaseModel):
    items: list[UserAdminRead]
    next_cursor: int | None = Field(description="Pass as `before` for the next page; null on the last page.")


class UserAdminUpdate(BaseModel):
    """Only the fields sent change; `null` for a quota means unlimited."""

    # Not nullable (a user always has a name, a role and a status): left out, they stay as they are.
    display_name: Text = Field(default=None, max_length=200)  # type: ignore[assignment]
    role: Role = Field(default=None, description="Left out: unchanged.")  # type: ignore[assignment]
    status: UserStatus = Field(default=None, description="Left out: unchanged.")  # type: ignore[assignment]
    messages_per_day: SmallCount | None = None
    tokens_per_day: Count | None = None


class BlockRequest(BaseModel):
    reason: Text = Field(min_length=1, max_length=1000, description="Internal note, kept in the audit log.")
    until: AwareDatetime | None = Field(default=None, description="When the block ends by itself; omit for none.")
