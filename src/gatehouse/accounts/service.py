"""Accounts services: users, API keys and console sessions. Services flush; the caller commits."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.accounts import lockout
from gatehouse.audit import service as audit
from gatehouse.auth.access import check_status
from gatehouse.auth.actor import Actor
from gatehouse.auth.cache import KEY_CHANGED, USER_CHANGED
from gatehouse.auth.models import ApiKey, User, UserSession
from gatehouse.auth.passwords import check_password_strength, hash_password, verify_password
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.auth.tokens import hash_token, key_prefix, new_api_key, new_session_token
from gatehouse.core.bus import EventBus
from gatehouse.db.base import utcnow
from gatehouse.db.session import after_commit
from gatehouse.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized

if TYPE_CHECKING:
    from gatehouse.limits.ratelimit import RateLimiter

INVALID_LOGIN = "Wrong email or password."
# Far enough for any real key; nearer than the year 9999, where converting to UTC overflows.
MAX_KEY_LIFETIME = timedelta(days=100 * 365)


def normalise_email(email: str) -> str:
    """Emails are unique case-insensitively: store them lower-cased and trimmed."""
    return email.strip().lower()


# --- who may manage whom -------------------------------------------------------------------------


def ensure_may_manage(*, actor_role: Role | None, target_role: Role | str, doing: str) -> None:
    """Only a superadmin may act on a superadmin (`doing`: "create", "change", "create keys for")."""
    if actor_role is None or actor_role is Role.SUPERADMIN:
        return  # None: the operator, from the CLI or at bootstrap
    if Role(target_role) is Role.SUPERADMIN:
        raise Forbidden(f"Only a superadmin can {doing} a superadmin.", code="role_not_allowed")


# --- users ---------------------------------------------------------------------------------------


async def get_user(session: AsyncSession, *, user_id: int) -> User | None:
    """A user by id."""
    return await session.get(User, user_id)


async def get_user_or_raise(session: AsyncSession, *, user_id: int) -> User:
    """A user by id, or 404."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.", code="user_not_found")
    return user


async def get_user_by_email(session: AsyncSession, *, email: str) -> User | None:
    """A user by email (case-insensitive)."""
    return (await session.execute(select(User).where(User.email == normalise_email(email)))).scalar_one_or_none()


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    role: Role = Role.USER,
    password: str | None = None,
    display_name: str = "",
    status: UserStatus = UserStatus.ACTIVE,
    messages_per_day: int | None = None,
    tokens_per_day: int | None = None,
    actor_role: Role | None = None,
) -> User:
    """Create a user; 403 when `actor_role` may not create this role, 409 when the email is taken, 400 when
    the password is weak."""
    ensure_may_manage(actor_role=actor_role, target_role=role, doing="create")
    email = normalise_email(email)
    if await get_user_by_email(session, email=email) is not None:
        raise Conflict(f"A user with email {email} already exists.", code="email_taken")
    password_hash = None
    if password is not None:
        if reason := check_password_strength(password):
            raise BadRequest(reason, code="weak_password", param="password")
        password_hash = await hash_password(password)
    user = User(
        email=email,
        role=role.value,
        status=status.value,
        password_hash=password_hash,
        display_name=display_name or email.split("@")[0],
        messages_per_day=messages_per_day,
        tokens_per_day=tokens_per_day,
    )
    try:
        # In a savepoint: another request may create the same email between the check above and this
        # insert; losing that race is a 409 (not a 500), and the caller's transaction stays usable.
        async with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        raise Conflict(f"A user with email {email} already exists.", code="email_taken") from exc
    return user


def announce_user_changed(session: AsyncSession, bus: EventBus, user_id: int) -> None:
    """After commit, every replica forgets this user's cached keys (status or role changed)."""
    after_commit(session, lambda: bus.publish(USER_CHANGED, {"user_id": user_id}))


async def set_status(session: AsyncSession, *, bus: EventBus, user: User, status: UserStatus) -> User:
    """Change a user's status; disabling ends their sessions, and every replica stops their keys."""
    user.status = status.value
    if status is not UserStatus.ACTIVE:
        await session.execute(delete(UserSession).where(UserSession.user_id == user.id))
    await session.flush()
    announce_user_changed(session, bus, user.id)
    return user


async def authenticate_password(session: AsyncSession, *, email: str, password: str) -> User | None:
    """The user if the password matches; the same work whether or not the email exists."""
    user = await get_user_by_email(session, email=email)
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
    except TooManyRequests:
        await _login_failed(session, sessionmaker, actor=actor, email=email, reason="locked")
        raise
    user = await authenticate_password(session, email=email, password=password)
    if user is None:
        failures = await lockout.count_failure(limiter, email=email, ip=ip)
        await _login_failed(session, sessionmaker, actor=actor, email=email, reason="bad_credentials")
        await lockout.back_off(failures, backoff_max_seconds)
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    try:
        # The password was right: not a guess, so it does not count towards the lockout.
        check_status(_principal_of(user))
    except Forbidden:
        await _login_failed(session, sessionmaker, actor=actor, email=email, reason="inactive")
        raise
    row, token = await create_session(session, user=user, ttl=ttl, ip=actor.ip, user_agent=user_agent)
    await audit.record(
        session,
        actor=dataclasses.replace(actor, type="user", user_id=user.id, label=user.email),
        action="login.succeeded",
        target_type="user",
        target_id=user.id,
    )
    return user, row, token


# --- API keys ------------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    *,
    actor: Actor,
    user_id: int,
    name: str,
    expires_at: datetime | None = None,
    raw_key: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key for a user, audited: returns the row and the key itself, which is shown once and never stored."""
    if expires_at is not None:
        now = utcnow()
        if expires_at <= now:
            raise BadRequest("expires_at must be in the future.", code="invalid_expiry", param="expires_at")
        if expires_at > now + MAX_KEY_LIFETIME:
            raise BadRequest(
                "expires_at must be within 100 years; omit it for a key that never expires.",
                code="invalid_expiry",
                param="expires_at",
            )
    raw = raw_key or new_api_key()
    key = ApiKey(user_id=user_id, name=name, prefix=key_prefix(raw), key_hash=hash_token(raw), expires_at=expires_at)
    session.add(key)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="key.created",
        target_type="key",
        target_id=key.id,
        details={"prefix": key.prefix, "name": name, "user_id": user_id, "expires_at": _iso(expires_at)},
    )
    return key, raw


async def create_api_key_for_user(
    session: AsyncSession,
    *,
    actor: Actor,
    actor_role: Role,
    user_id: int,
    name: str,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """An admin creates a key for another user (e.g. a service account); 404 when no such user."""
    user = await get_user_or_raise(session, user_id=user_id)
    ensure_may_manage(actor_role=actor_role, target_role=user.role, doing="create keys for")
    return await create_api_key(session, actor=actor, user_id=user.id, name=name, expires_at=expires_at)


async def list_api_keys(session: AsyncSession, *, user_id: int, include_revoked: bool = True) -> list[ApiKey]:
    """A user's keys, newest first."""
    query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id.desc())
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.execute(query)).scalars())


async def get_api_key_or_raise(session: AsyncSession, *, key_id: int, user_id: int | None = None) -> ApiKey:
    """A key by id (optionally only if it belongs to `user_id`), or 404."""
    key = await session.get(ApiKey, key_id)
    if key is None or (user_id is not None and key.user_id != user_id):
        raise NotFound(f"No API key with id {key_id}.", code="key_not_found")
    return key


async def get_api_key_by_raw(session: AsyncSession, *, raw_key: str) -> ApiKey | None:
    """The key row for a raw key, if it exists."""
    return (await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_token(raw_key)))).scalar_one_or_none()


async def revoke_api_key(session: AsyncSession, *, bus: EventBus, actor: Actor, key: ApiKey) -> ApiKey:
    """Revoke a key (audited); every replica refuses it from the next request on."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
        await audit.record(
            session,
            actor=actor,
            action="key.revoked",
            target_type="key",
            target_id=key.id,
            details={"prefix": key.prefix, "name": key.name, "user_id": key.user_id},
        )
    key_id = key.id
    after_commit(session, lambda: bus.publish(KEY_CHANGED, {"key_id": key_id}))
    return key


# One key's last-used time (parameters p_key_id, p_when); also run directly by SQLite's statement store.
KEY_USED = update(ApiKey).where(ApiKey.id == bindparam("p_key_id")).values(last_used_at=bindparam("p_when"))


async def record_key_use(session: AsyncSession, *, last_used: dict[int, datetime]) -> None:
    """Write batched last-used times (one UPDATE per key, never per request)."""
    for key_id, when in last_used.items():
        await session.execute(KEY_USED, {"p_key_id": key_id, "p_when": when})


# --- console sessions ----------------------------------------------------------------------------


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


async def delete_session(session: AsyncSession, *, token: str, actor: Actor) -> bool:
    """End a session (logout, audited); False when there was none."""
    token_hash = hash_token(token)
    user_id = (
        await session.execute(select(UserSession.user_id).where(UserSession.token_hash == token_hash))
    ).scalar_one_or_none()
    if user_id is None:
        return False
    await session.execute(delete(UserSession).where(UserSession.token_hash == token_hash))
    await audit.record(session, actor=actor, action="logout", target_type="user", target_id=user_id)
    return True


# --- login auditing, key administration (added with login hardening) --------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


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
        user = await get_user_by_email(own, email=email)
        # The attempted email is kept only when it names an account: people type passwords into the email
        # field, and an unknown "email" may be one. The hash still lets investigators group attempts.
        details: dict[str, object] = {"email_hash": lockout.email_hash(email)[:16], "reason": reason}
        if user is not None:
            details["email"] = user.email
        await audit.record(
            own,
            actor=actor,
            action="login.failed",
            target_type="user" if user is not None else None,
            target_id=user.id if user is not None else None,
            details=details,
        )


KeyState = Literal["active", "revoked", "expired"]


async def list_keys(
    session: AsyncSession,
    *,
    user_id: int | None = None,
    state: KeyState | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[ApiKey]:
    """Keys of every user (or one), newest first, at most `limit`, optionally only those older than `before_id`."""
    query = select(ApiKey).order_by(ApiKey.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    now = utcnow()
    if state == "active":
        query = query.where(ApiKey.revoked_at.is_(None), (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now))
    elif state == "revoked":
        query = query.where(ApiKey.revoked_at.is_not(None))
    elif state == "expired":
        query = query.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    if before_id is not None:
        query = query.where(ApiKey.id < before_id)
    return list((await session.execute(query)).scalars())


async def revoke_key_as_admin(
    session: AsyncSession, *, bus: EventBus, actor: Actor, actor_role: Role, key_id: int
) -> ApiKey:
    """An admin revokes any user's key; only a superadmin may revoke a superadmin's."""
    key = await get_api_key_or_raise(session, key_id=key_id)
    owner = await get_user_or_raise(session, user_id=key.user_id)
    ensure_may_manage(actor_role=actor_role, target_role=owner.role, doing="revoke keys of")
    return await revoke_api_key(session, bus=bus, actor=actor, key=key)


async def rotate_keys(
    session: AsyncSession, *, bus: EventBus, actor: Actor, user_id: int, name: str
) -> tuple[ApiKey, str, list[ApiKey]]:
    """Replace a user's active keys named `name` with one new key: (new key row, the key itself, revoked rows)."""
    old = [k for k in await list_api_keys(session, user_id=user_id, include_revoked=False) if k.name == name]
    key, raw = await create_api_key(session, actor=actor, user_id=user_id, name=name)
    for previous in old:
        await revoke_api_key(session, bus=bus, actor=actor, key=previous)
    return key, raw, old
