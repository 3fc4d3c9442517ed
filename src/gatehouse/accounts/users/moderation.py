"""User administration: list, change (name, role, status, quotas), block and unblock; every change audited, the
status and block changes also on the live feed, and every replica told at once.

The rules: only a superadmin may act on a superadmin or make one; nobody disables, blocks or demotes the
last active superadmin, or disables or blocks themselves; a monitor may block and unblock users ranked
below them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.errors import (
    LastSuperadmin,
    RoleNotAllowed,
    SelfBlock,
    SelfDisable,
    SelfRoleChange,
)
from gatehouse.accounts.events import (
    UserBlockedEvent,
    UserDisabledEvent,
    UserEnabledEvent,
    UserQuotaChangedEvent,
    UserRoleChangedEvent,
    UserUnblockedEvent,
    UserUpdatedEvent,
)
from gatehouse.accounts.users import service as users
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import User
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.core.bus import EventBus
from gatehouse.core.feed import EventFeed
from gatehouse.db.base import utcnow
from gatehouse.errors import BadRequest
from gatehouse.limits.models import UsageCounter

QUOTA_FIELDS = ("messages_per_day", "tokens_per_day")


@dataclass
class UserWithUsage:
    """A user and their usage on one quota day."""

    user: User
    messages: int
    tokens: int


async def list_users(
    session: AsyncSession,
    *,
    day: date,
    search: str | None = None,
    role: Role | None = None,
    status: UserStatus | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[UserWithUsage]:
    """Users (newest first), optionally matching an email or name fragment, a role, a status."""
    query = (
        select(User, UsageCounter.messages, UsageCounter.tokens)
        .outerjoin(UsageCounter, and_(UsageCounter.user_id == User.id, UsageCounter.day == day))
        .order_by(User.id.desc())
        .limit(limit)
    )
    if search:
        pattern = f"%{search.strip().lower()}%"
        query = query.where(or_(User.email.like(pattern), func.lower(User.display_name).like(pattern)))
    if role is not None:
        query = query.where(User.role == role.value)
    if status is not None:
        query = query.where(User.status == status.value)
    if before_id is not None:
        query = query.where(User.id < before_id)
    rows = (await session.execute(query)).all()
    return [UserWithUsage(user, messages or 0, tokens or 0) for user, messages, tokens in rows]


async def _other_active_superadmins(session: AsyncSession, user_id: int) -> int:
    query = (
        select(func.count())
        .select_from(User)
        .where(
            User.role == Role.SUPERADMIN.value,
            User.status == UserStatus.ACTIVE.value,
            User.blocked_at.is_(None),
            User.id != user_id,
        )
    )
    return int((await session.execute(query)).scalar_one())


async def _lock_active_superadmins(session: AsyncSession) -> None:
    """Lock the active superadmins' rows (PostgreSQL; SQLite has one writer at a time anyway) before counting
    them: two changes that would each leave one superadmin (two demotions, deletions or disables at once) then
    run one after the other, and the second counts what the first left."""
    await session.execute(
        select(User.id)
        .where(User.role == Role.SUPERADMIN.value, User.status == UserStatus.ACTIVE.value)
        .order_by(User.id)  # always in the same order: two lockers never wait for each other
        .with_for_update()
    )


async def ensure_not_last_superadmin(session: AsyncSession, user: User, doing: str) -> None:
    """403 `last_superadmin` when `user` is the last active superadmin (`doing`: "demote", "delete"...)."""
    if user.role != Role.SUPERADMIN.value:
        return
    await _lock_active_superadmins(session)
    if await _other_active_superadmins(session, user.id) == 0:
        raise LastSuperadmin(f"You cannot {doing} the last active superadmin: make another superadmin first.")


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def update_user(
    session: AsyncSession,
    *,
    bus: EventBus,
    feed: EventFeed | None,
    actor: Actor,
    by: Principal,
    user_id: int,
    changes: dict[str, Any],
) -> User:
    """Apply an admin's changes (display_name, role, status, quotas) with every rule checked, and audit them."""
    user = await users.get_or_raise(session, user_id=user_id)
    users.ensure_may_manage(actor_role=by.role, target_role=user.role, doing="change")
    if "display_name" in changes and changes["display_name"] is None:
        raise BadRequest("display_name cannot be null.", param="display_name")
    new_role = changes.get("role")
    if new_role is not None and Role(new_role) != Role(user.role):
        users.ensure_may_manage(actor_role=by.role, target_role=new_role, doing="make someone")
        if user.id == by.user_id:
            raise SelfRoleChange("You cannot change your own role.")
        await ensure_not_last_superadmin(session, user, "demote")
    new_status = changes.get("status")
    if new_status is not None and UserStatus(new_status) != UserStatus(user.status):
        if user.id == by.user_id:
            raise SelfDisable("You cannot change your own status.")
        if UserStatus(new_status) is not UserStatus.ACTIVE:
            await ensure_not_last_superadmin(session, user, "disable")
    changed: dict[str, tuple[Any, Any]] = {}
    for name, value in changes.items():
        value = value.value if isinstance(value, Role | UserStatus) else value
        before = getattr(user, name)
        if before != value:
            changed[name] = (before, value)
            if name != "status":
                setattr(user, name, value)
    if "status" in changed:
        await users.set_status(session, bus=bus, user=user, status=UserStatus(changed["status"][1]))
    await session.flush()
    if not changed:
        return user
    fields = {name: {"before": _plain(b), "after": _plain(a)} for name, (b, a) in changed.items()}
    await record(session, UserUpdatedEvent(user_id=user.id, changes=fields), actor=actor)
    if "role" in changed:
        await record(session, UserRoleChangedEvent(user_id=user.id, **fields["role"]), actor=actor)
        users.announce_changed(session, bus, user.id)
    if "status" in changed:
        became = UserEnabledEvent if changed["status"][1] == UserStatus.ACTIVE.value else UserDisabledEvent
        await record(session, became(user_id=user.id, **fields["status"]), actor=actor, feed=feed)
    quota = {name: fields[name] for name in QUOTA_FIELDS if name in fields}
    if quota:
        await record(session, UserQuotaChangedEvent(user_id=user.id, **quota), actor=actor)
    return user


def may_moderate(by: Role | None, target: Role | str, doing: str) -> None:
    """403 `role_not_allowed` unless `by` (None: the operator) may `doing` (block, unblock, terminate the streams of)
    the user: only a superadmin acts on a superadmin, and anyone else only on users ranked below them."""
    users.ensure_may_manage(actor_role=by, target_role=target, doing=doing)
    if by is not None and by is not Role.SUPERADMIN and not by.rank > Role(target).rank:
        article = "An" if by.value[0] in "aeiou" else "A"
        raise RoleNotAllowed(f"{article} {by.value} can only {doing} users ranked below {by.value}.")


async def block(
    session: AsyncSession,
    *,
    bus: EventBus,
    feed: EventFeed | None,
    actor: Actor,
    by: Principal,
    user_id: int,
    reason: str,
    until: datetime | None,
) -> User:
    """Block a user (at once, on every replica) with an internal reason, for good or until a time."""
    user = await users.get_or_raise(session, user_id=user_id)
    if user.id == by.user_id:
        raise SelfBlock("You cannot block yourself.")
    may_moderate(by.role, user.role, "block")
    await ensure_not_last_superadmin(session, user, "block")
    if until is not None and until <= utcnow():
        raise BadRequest("`until` must be in the future (or omitted for a block without end).", param="until")
    user.blocked_at, user.blocked_until, user.block_reason, user.blocked_by = utcnow(), until, reason, by.user_id
    await session.flush()
    users.announce_changed(session, bus, user.id)
    await record(session, UserBlockedEvent(user_id=user.id, reason=reason, until=until), actor=actor, feed=feed)
    return user


async def unblock(
    session: AsyncSession,
    *,
    bus: EventBus,
    feed: EventFeed | None,
    actor: Actor,
    by: Principal,
    user_id: int,
) -> User:
    """Lift a block."""
    user = await users.get_or_raise(session, user_id=user_id)
    may_moderate(by.role, user.role, "unblock")
    was = {"reason": user.block_reason, "until": _plain(user.blocked_until)}
    user.blocked_at = user.blocked_until = user.block_reason = user.blocked_by = None
    await session.flush()
    users.announce_changed(session, bus, user.id)
    await record(session, UserUnblockedEvent(user_id=user.id, was=was), actor=actor, feed=feed)
    return user


async def with_usage(session: AsyncSession, *, user_id: int, day: date) -> UserWithUsage:
    """One user and their usage on `day`, or 404."""
    row = (
        await session.execute(
            select(User, UsageCounter.messages, UsageCounter.tokens)
            .outerjoin(UsageCounter, and_(UsageCounter.user_id == User.id, UsageCounter.day == day))
            .where(User.id == user_id)
        )
    ).first()
    if row is None:
        raise UserNotFound(f"No user with id {user_id}.")
    user, messages, tokens = row
    return UserWithUsage(user, messages or 0, tokens or 0)
