"""Idempotent creation of the first superadmin from BOOTSTRAP_ADMIN_*."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.users import service as users
from gatehouse.auth.actor import Actor
from gatehouse.auth.roles import Role
from gatehouse.errors import Conflict
from gatehouse.settings import Settings

BOOTSTRAP_KEY_NAME = "bootstrap"
BOOTSTRAP_ACTOR = Actor.system("bootstrap")


@dataclass
class BootstrapResult:
    """What bootstrap did; generated secrets are here to be shown once, then forgotten."""

    email: str
    created_user: bool = False
    generated_password: str | None = None
    created_key: bool = False
    generated_key: str | None = None


async def bootstrap_admin(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> BootstrapResult:
    """Create the bootstrap superadmin (and its key) unless they exist; safe on several replicas at once."""
    email = users.normalise_email(settings.bootstrap_admin_email)
    result = BootstrapResult(email=email)
    given_password = settings.bootstrap_admin_password.get_secret_value()
    given_key = settings.bootstrap_admin_api_key.get_secret_value()
    try:
        async with sessionmaker() as session, session.begin():
            user = await users.get_by_email(session, email=email)
            if user is None:
                password = given_password or secrets.token_urlsafe(12)
                user = await users.create(
                    session,
                    actor=BOOTSTRAP_ACTOR,
                    actor_role=None,
                    email=email,
                    role=Role.SUPERADMIN,
                    password=password,
                    display_name="Administrator",
                )
                result.created_user = True
                result.generated_password = None if given_password else password
            if given_key:
                if await keys.get_by_raw(session, raw_key=given_key) is None:
                    await keys.create(
                        session, actor=BOOTSTRAP_ACTOR, user_id=user.id, name=BOOTSTRAP_KEY_NAME, raw_key=given_key
                    )
                    result.created_key = True
            elif result.created_user:
                _, raw = await keys.create(session, actor=BOOTSTRAP_ACTOR, user_id=user.id, name=BOOTSTRAP_KEY_NAME)
                result.created_key = True
                result.generated_key = raw
    except (IntegrityError, Conflict):
        # Another replica bootstrapped at the same moment; its result stands.
        return BootstrapResult(email=email)
    return result


def describe(result: BootstrapResult) -> str | None:
    """The one-time banner with generated credentials, or None when nothing was generated."""
    if not (result.generated_password or result.generated_key):
        return None
    lines = [
        "",
        "=" * 72,
        "Gatehouse bootstrap superadmin created (shown once, store it now):",
        f"  email:    {result.email}",
    ]
    if result.generated_password:
        lines.append(f"  password: {result.generated_password}")
    if result.generated_key:
        lines.append(f"  API key:  {result.generated_key}")
    lines += ["Set BOOTSTRAP_ADMIN_PASSWORD / BOOTSTRAP_ADMIN_API_KEY to choose them yourself.", "=" * 72, ""]
    return "\n".join(lines)
