"""Request and response models for console sessions."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from gatehouse.accounts.users.schemas import UserRead
from gatehouse.fields import Text


class LoginRequest(BaseModel):
    # Not EmailStr: BOOTSTRAP_ADMIN_EMAIL may be e.g. admin@localhost or admin@gatehouse.lan, which
    # EmailStr rejects; a login with an address nobody has simply fails like a wrong password.
    email: Text = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024, description="8 to 1,024 characters.")


class PasswordChanged(BaseModel):
    sessions_ended: int = Field(description="Your other console sessions, signed out (this one stays).")


class LoginResponse(BaseModel):
    user: UserRead
    csrf_token: str = Field(description="Send as X-CSRF-Token on state-changing requests made with the cookie.")
    expires_at: datetime
