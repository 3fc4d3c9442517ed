"""Request and response models for accounts routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from gatehouse.auth.roles import Role, UserStatus
from gatehouse.fields import Text


class LoginRequest(BaseModel):
    # Not EmailStr: BOOTSTRAP_ADMIN_EMAIL may be e.g. admin@localhost or admin@gatehouse.lan, which
    # EmailStr rejects; a login with an address nobody has simply fails like a wrong password.
    email: Text = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


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


class LoginResponse(BaseModel):
    user: UserRead
    csrf_token: str = Field(description="Send as X-CSRF-Token on state-changing requests made with the cookie.")
    expires_at: datetime


class UserCreate(BaseModel):
    email: EmailStr
    role: Role = Role.USER
    password: str | None = Field(
        default=None, min_length=8, max_length=1024, description="Optional: a user without one can only use API keys."
    )
    display_name: Text = Field(default="", max_length=200)


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
