"""Console sessions: log in (lockout, password, status, every outcome audited) and log out. Services flush; the
caller commits (a failed login is audited in a transaction of its own, since the request's rolls back)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.accounts.errors import InvalidCredentials, LoginLocked, WeakPassword, WrongPassword
from gatehouse.accounts.events import LoginFailedEvent, LoginSucceededEvent, PasswordChangedEvent, SessionEndedEvent
from gatehouse.accounts.sessions import lockout
from gatehouse.accounts.users import service as users
from gatehouse.audit.service import record
from gatehouse.auth.access import check_status
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import User, UserSession
from gatehouse.auth.passwords import check_password_strength, hash_password, verify_password
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.auth.tokens import hash_token, new_session_token
from gatehouse.db.base import utcnow
from gatehouse.errors import Forbidden
from gatehouse.limits.ratelimit import RateLimiter

INVALID_LOGIN = "Wrong email or password."


async def authenticate_password(session: AsyncSession, *, email: str, password: str) -> User | None:
    """The user if the password matches; the same work whether or not the email exists."""
    user = await users.get_by_email(session, email=email)
    ok = await verify_password(user.password_hash if user else None, password)
    return user if ok and user is not None else None


async def log_in(
    session: AsyncSession,
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    limiter: RateLimiter,
    actor: Actor,
    email: str,
    password: str,
    ttl: timedelta,
    user_agent: str | None,
    backoff_max_seconds: float = 0.0,
) -> tuple[User, UserSession, str]:
    """Check the lockout, the password and the account's status, then open a console session:
    (user, row, cookie value). Every outcome is audited; unknown and known emails fail alike."""
    ip = actor.ip or "unknown"
    try:
        await lockout.ensure_not_locked(limiter, email=email, ip=ip)
    except LoginLocked:
        await _login_failed(session, sessionmaker, actor=actor, email=email, reason="locked")
        raise
    user = await authenticate_password(session, email=email, password=password)
    if user is None:
        failures = await lockout.count_failure(limiter, email=email, ip=ip)
        await _login_failed(session, sessionmaker, actor=actor, email=email, reason="bad_credentials")
        await lockout.back_off(failures, backoff_max_seconds)
        raise InvalidCredentials(INVALID_LOGIN)
    try:
        # The password was right: not a guess, so it does not count towards the lockout.
        check_status(_principal_of(user))
    except Forbidden:
        await _login_failed(session, sessionmaker, actor=actor, email=email, reason="inactive")
        raise
    row, token = await create_session(session, user=user, ttl=ttl, ip=actor.ip, user_agent=user_agent)
    as_user = dataclasses.replace(actor, type="user", user_id=user.id, label=user.email)
    await record(session, LoginSucceededEvent(user_id=user.id), actor=as_user)
    return user, row, token


async def create_session(
    session: AsyncSession, *, user: User, ttl: timedelta, ip: str | None, user_agent: str | None
) -> tuple[UserSession, str]:
    """A server-side session; returns the row and the cookie value."""
    token = new_session_token()
    row = UserSession(
        token_hash=hash_token(token),
        user_id=user.id,
        expires_at=utcnow() + ttl,
        ip=ip,
        user_agent=(user_agent or "").replace("\x00", "")[:300] or None,  # PostgreSQL text holds no NUL
    )
    session.add(row)
    user.last_login_at = utcnow()
    await session.flush()
    return row, token


async def log_out(session: AsyncSession, *, token: str, actor: Actor) -> bool:
    """End a session (audited); False when there was none."""
    token_hash = hash_token(token)
    user_id = (
        await session.execute(select(UserSession.user_id).where(UserSession.token_hash == token_hash))
    ).scalar_one_or_none()
    if user_id is None:
        return False
    await session.execute(delete(UserSession).where(UserSession.token_hash == token_hash))
    await record(session, SessionEndedEvent(user_id=user_id), actor=actor)
    return True


async def change_password(
    session: AsyncSession,
    *,
    limiter: RateLimiter,
    actor: Actor,
    user_id: int,
    current: str,
    new: str,
    keep_session_id: int | None,
) -> int:
    """Change a user's own password: the current one must be right (wrong guesses count towards the sign-in
    lockout, so a stolen session cannot find it), the new one strong enough; the user's other console sessions
    end. Returns how many ended; audited."""
    user = await users.get_or_raise(session, user_id=user_id)
    ip = actor.ip or "unknown"
    await lockout.ensure_not_locked(limiter, email=user.email, ip=ip)
    if not await verify_password(user.password_hash, current):
        await lockout.count_failure(limiter, email=user.email, ip=ip)
        raise WrongPassword("The current password is wrong.", param="current_password")
    if reason := check_password_strength(new):
        raise WeakPassword(reason, param="new_password")
    user.password_hash = await hash_password(new)
    others = delete(UserSession).where(UserSession.user_id == user_id)
    if keep_session_id is not None:
        others = others.where(UserSession.id != keep_session_id)
    ended = int(getattr(await session.execute(others), "rowcount", 0) or 0)
    await record(session, PasswordChangedEvent(user_id=user_id, sessions_ended=ended), actor=actor)
    return ended


def _principal_of(user: User) -> Principal:
    return Principal(
        user_id=user.id,
        email=user.email,
        role=Role(user.role),
        status=UserStatus(user.status),
        blocked_at=user.blocked_at,
        blocked_until=user.blocked_until,
    )


async def _login_failed(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    actor: Actor,
    email: str,
    reason: Literal["bad_credentials", "locked", "inactive"],
) -> None:
    """Audit a failed login in a transaction of its own: the request's rolls back with the error."""
    # Ended first: on SQLite the request's transaction holds the write lock the audit row needs.
    await session.rollback()
    async with sessionmaker() as own, own.begin():
        user = await users.get_by_email(own, email=email)
        event = LoginFailedEvent(
            user_id=user.id if user is not None else None,
            email_hash=lockout.email_hash(email)[:16],
            reason=reason,
            email=user.email if user is not None else None,
        )
        await record(own, event, actor=actor)
