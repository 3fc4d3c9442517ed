"""Request and response models for invites and sign-up."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, model_validator

from gatehouse.accounts.invites.service import DEFAULT_EXPIRY_HOURS, MAX_EXPIRY_HOURS, MAX_TOKEN_LENGTH, InviteStatus
from gatehouse.auth.roles import Role
from gatehouse.fields import Text


class InviteCreate(BaseModel):
    email: EmailStr | None = Field(default=None, description="When set, only this address may redeem the invite.")
    role: Role = Role.USER
    expires_in_hours: int | None = Field(
        default=None, ge=1, le=MAX_EXPIRY_HOURS, description=f"Default {DEFAULT_EXPIRY_HOURS} (a week)."
    )
    expires_at: AwareDatetime | None = Field(default=None, description="Instead of expires_in_hours; with a timezone.")
    max_uses: int = Field(default=1, ge=1, le=10_000, description="How many accounts it may create.")

    @model_validator(mode="after")
    def _one_expiry(self) -> InviteCreate:
        if self.expires_in_hours is not None and self.expires_at is not None:
            raise ValueError("give expires_in_hours or expires_at, not both")
        return self


class InviteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str | None = None
    role: Role
    status: InviteStatus
    created_by: int | None = None
    created_at: datetime
    expires_at: datetime | None = None
    max_uses: int
    uses: int
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class InviteCreated(InviteRead):
    token: str = Field(description="The invite itself: shown once, hand it over now.")
    link: str = Field(description="The sign-up link carrying the token.")


class InvitePage(BaseModel):
    items: list[InviteRead]
    next_cursor: int | None = Field(description="Pass as `before` for the next page; null on the last one.")


class SignupRequest(BaseModel):
    invite: Text | None = Field(default=None, min_length=1, max_length=MAX_TOKEN_LENGTH)
    email: EmailStr
    password: str = Field(min_length=8, max_length=1024)
    display_name: Text = Field(default="", max_length=200)
