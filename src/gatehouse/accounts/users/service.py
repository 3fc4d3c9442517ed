"""Users: look up, create (audited), change status. Services flush; the caller commits.

Who may manage whom (accounts/managing.py): only a superadmin acts on a superadmin; the CLI operator and the
bootstrap (actor role None) may do anything.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.errors import EmailTaken, WeakPassword
from gatehouse.accounts.events import UserCreatedEvent
from gatehouse.accounts.managing import ensure_may_manage as ensure_may_manage  # its users call it from here
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import User, UserSession
from gatehouse.auth.passwords import check_password_strength, hash_password
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.session import signal_after_commit


def normalise_email(email: str) -> str:
    """Emails are unique case-insensitively: store them lower-cased and trimmed."""
    return email.strip().lower()


async def get(session: AsyncSession, *, user_id: int) -> User | None:
    """A user by id."""
    return await session.get(User, user_id)


async def get_or_raise(session: AsyncSession, *, user_id: int) -> User:
    """A user by id, or 404."""
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"No user with id {user_id}.")
    return user


async def get_by_email(session: AsyncSession, *, email: str) -> User | None:
    """A user by email (case-insensitive)."""
    return (await session.execute(select(User).where(User.email == normalise_email(email)))).scalar_one_or_none()


async def get_by_email_or_raise(session: AsyncSession, *, email: str, hint: str | None = None) -> User:
    """A user by email, or 404 (`hint`: what to do about it)."""
    user = await get_by_email(session, email=email)
    if user is None:
        raise UserNotFound(f"No user with email {normalise_email(email)}" + (f": {hint}." if hint else "."))
    return user


async def new_user(
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
    """The row of a new user, not audited (the caller records how the account came to be): 403 when
    `actor_role` may not create this role, 409 when the email is taken, 400 when the password is weak."""
    ensure_may_manage(actor_role=actor_role, target_role=role, doing="create")
    email = normalise_email(email)
    if await get_by_email(session, email=email) is not None:
        raise EmailTaken(f"A user with email {email} already exists.")
    password_hash = None
    if password is not None:
        if reason := check_password_strength(password):
            raise WeakPassword(reason, param="password")
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
        raise EmailTaken(f"A user with email {email} already exists.") from exc
    return user


async def create(
    session: AsyncSession,
    *,
    actor: Actor,
    actor_role: Role | None,
    email: str,
    role: Role = Role.USER,
    password: str | None = None,
    display_name: str = "",
    messages_per_day: int | None = None,
    tokens_per_day: int | None = None,
) -> User:
    """Create a user, audited `user.created` (an administrator, the CLI or the bootstrap)."""
    user = await new_user(
        session,
        email=email,
        role=role,
        password=password,
        display_name=display_name,
        messages_per_day=messages_per_day,
        tokens_per_day=tokens_per_day,
        actor_role=actor_role,
    )
    await session.flush()
    event = UserCreatedEvent(
        user_id=user.id,
        email=user.email,
        role=user.role,
        messages_per_day=user.messages_per_day,
        tokens_per_day=user.tokens_per_day,
    )
    await record(session, event, actor=actor)
    return user


def announce_changed(session: AsyncSession, bus: EventBus, user_id: int) -> None:
    """After commit, every replica forgets this user's cached keys (status, role or block changed)."""
    signal_after_commit(session, bus, Signal.USER_CHANGED, {"user_id": user_id})


async def set_status(session: AsyncSession, *, bus: EventBus, user: User, status: UserStatus) -> User:
    """Change a user's status; disabling ends their sessions, and every replica stops their keys."""
    user.status = status.value
    if status is not UserStatus.ACTIVE:
        await session.execute(delete(UserSession).where(UserSession.user_id == user.id))
    await session.flush()
    announce_changed(session, bus, user.id)
    return user
