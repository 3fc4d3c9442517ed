"""Routes: /me (the caller's account) and /admin/users (list, create, read, change, disable, enable, block,
unblock). Thin: parse, call accounts.users, shape the answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.errors import (
    EmailTaken,
    LastSuperadmin,
    RoleNotAllowed,
    SelfBlock,
    SelfDisable,
    SelfRoleChange,
    WeakPassword,
)
from gatehouse.accounts.groups import service as groups
from gatehouse.accounts.groups.schemas import GroupRef
from gatehouse.accounts.users import moderation
from gatehouse.accounts.users import service as users
from gatehouse.accounts.users.schemas import (
    BlockRequest,
    MeRead,
    UserAdminRead,
    UserAdminUpdate,
    UserCreate,
    UserPage,
    UserRead,
)
from gatehouse.auth.access import require
from gatehouse.auth.actor import Actor
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.core.bus import EventBus
from gatehouse.core.feed import EventFeed
from gatehouse.db.base import utcnow
from gatehouse.deps import ActorDep, BusDep, FeedDep, PrincipalDep, SessionDep, SettingsDep
from gatehouse.errors import BadRequest, errors
from gatehouse.fields import MAX_DB_INT, IdPath
from gatehouse.limits import quotas, usage
from gatehouse.settings import Settings

router = APIRouter()
admin = APIRouter(prefix="/admin/users", tags=["admin"])
ADMIN = [require(Role.ADMIN)]
MONITOR = [require(Role.MONITOR)]


@router.get("/me", response_model=MeRead, tags=["me"], dependencies=[require(Role.USER)])
async def me(principal: PrincipalDep, session: SessionDep) -> MeRead:
    """The caller's own account, with the groups they belong to."""
    user = UserRead.model_validate(await users.get_or_raise(session, user_id=principal.user_id))
    mine = await groups.groups_of(session, user_id=principal.user_id)
    return MeRead(**user.model_dump(), groups=[GroupRef(id=g.id, name=g.name, added_at=m.added_at) for g, m in mine])


def _read(row: moderation.UserWithUsage) -> UserAdminRead:
    user = row.user
    now = utcnow()
    blocked = user.blocked_at is not None and (user.blocked_until is None or user.blocked_until > now)
    return UserAdminRead.model_validate(
        {
            **{k: getattr(user, k) for k in UserAdminRead.model_fields if hasattr(user, k)},
            "blocked": blocked,
            "messages_today": row.messages,
            "tokens_today": row.tokens,
            "messages_percent": usage.percent(row.messages, user.messages_per_day),
            "tokens_percent": usage.percent(row.tokens, user.tokens_per_day),
        }
    )


async def _read_one(session: AsyncSession, settings: Settings, user_id: int) -> UserAdminRead:
    day = quotas.quota_day(settings.quota_timezone)
    return _read(await moderation.with_usage(session, user_id=user_id, day=day))


@admin.get("", response_model=UserPage, dependencies=MONITOR)
async def list_users(
    session: SessionDep,
    settings: SettingsDep,
    q: Annotated[str | None, Query(max_length=320, description="Part of an email or display name.")] = None,
    role: Role | None = None,
    status: UserStatus | None = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_DB_INT, description="Cursor: the `next_cursor` of a page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> UserPage:
    """Users, newest first, with today's usage and the percentage of their quotas."""
    day = quotas.quota_day(settings.quota_timezone)
    rows = await moderation.list_users(
        session, day=day, search=q, role=role, status=status, before_id=before, limit=limit + 1
    )
    page = rows[:limit]
    return UserPage(items=[_read(r) for r in page], next_cursor=page[-1].user.id if len(rows) > limit else None)


@admin.post(
    "",
    responses=errors(EmailTaken, WeakPassword, RoleNotAllowed),
    response_model=UserAdminRead,
    status_code=status.HTTP_201_CREATED,
    dependencies=ADMIN,
)
async def create_user(
    body: UserCreate, principal: PrincipalDep, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> UserAdminRead:
    """Create a user (only a superadmin creates superadmins); quotas default to DEFAULT_*_PER_DAY."""
    user = await users.create(
        session,
        actor=actor,
        actor_role=principal.role,
        email=body.email,
        role=body.role,
        password=body.password,
        display_name=body.display_name,
        messages_per_day=settings.default_messages_per_day,
        tokens_per_day=settings.default_tokens_per_day,
    )
    return _read(moderation.UserWithUsage(user, 0, 0))


@admin.get("/{user_id}", responses=errors(UserNotFound), response_model=UserAdminRead, dependencies=MONITOR)
async def get_user(user_id: IdPath, session: SessionDep, settings: SettingsDep) -> UserAdminRead:
    """One user, with today's usage."""
    return await _read_one(session, settings, user_id)


@dataclass(frozen=True)
class Moderator:
    """What every change to a user needs: the transaction, who changes it (and with what role), where the change
    is told (the bus, the live feed), and the settings (the quota day of the answer)."""

    session: AsyncSession
    actor: Actor
    by: Principal
    settings: Settings
    bus: EventBus
    feed: EventFeed


async def _moderator(
    session: SessionDep, actor: ActorDep, principal: PrincipalDep, settings: SettingsDep, bus: BusDep, feed: FeedDep
) -> Moderator:
    """The caller as a moderator of users."""
    return Moderator(session, actor, principal, settings, bus, feed)


ModeratorDep = Annotated[Moderator, Depends(_moderator)]


async def _update(moderator: Moderator, user_id: int, changes: dict[str, Any]) -> UserAdminRead:
    await moderation.update_user(
        moderator.session,
        bus=moderator.bus,
        feed=moderator.feed,
        actor=moderator.actor,
        by=moderator.by,
        user_id=user_id,
        changes=changes,
    )
    return await _read_one(moderator.session, moderator.settings, user_id)


@admin.patch(
    "/{user_id}",
    responses=errors(UserNotFound, SelfRoleChange, SelfDisable, RoleNotAllowed, LastSuperadmin),
    response_model=UserAdminRead,
    dependencies=ADMIN,
)
async def update_user(user_id: IdPath, body: UserAdminUpdate, moderator: ModeratorDep) -> UserAdminRead:
    """Change a user's name, role, status or daily quotas (null: unlimited); each change is audited."""
    return await _update(moderator, user_id, body.model_dump(include=body.model_fields_set))


@admin.post(
    "/{user_id}/disable",
    responses=errors(UserNotFound, SelfDisable, RoleNotAllowed, LastSuperadmin),
    response_model=UserAdminRead,
    dependencies=ADMIN,
)
async def disable_user(user_id: IdPath, moderator: ModeratorDep) -> UserAdminRead:
    """Disable a user: their sessions end and their keys stop working on every replica at once."""
    return await _update(moderator, user_id, {"status": UserStatus.DISABLED})


@admin.post(
    "/{user_id}/enable",
    responses=errors(UserNotFound, RoleNotAllowed),
    response_model=UserAdminRead,
    dependencies=ADMIN,
)
async def enable_user(user_id: IdPath, moderator: ModeratorDep) -> UserAdminRead:
    """Re-enable a disabled user."""
    return await _update(moderator, user_id, {"status": UserStatus.ACTIVE})


@admin.post(
    "/{user_id}/block",
    responses=errors(UserNotFound, BadRequest, SelfBlock, RoleNotAllowed),
    response_model=UserAdminRead,
    dependencies=MONITOR,
)
async def block_user(user_id: IdPath, body: BlockRequest, moderator: ModeratorDep) -> UserAdminRead:
    """Block a user at once on every replica (403 account_blocked), for good or `until` a time."""
    await moderation.block(
        moderator.session,
        bus=moderator.bus,
        feed=moderator.feed,
        actor=moderator.actor,
        by=moderator.by,
        user_id=user_id,
        reason=body.reason,
        until=body.until,
    )
    return await _read_one(moderator.session, moderator.settings, user_id)


@admin.post(
    "/{user_id}/unblock",
    responses=errors(UserNotFound, RoleNotAllowed),
    response_model=UserAdminRead,
    dependencies=MONITOR,
)
async def unblock_user(user_id: IdPath, moderator: ModeratorDep) -> UserAdminRead:
    """Lift a block."""
    await moderation.unblock(
        moderator.session,
        bus=moderator.bus,
        feed=moderator.feed,
        actor=moderator.actor,
        by=moderator.by,
        user_id=user_id,
    )
    return await _read_one(moderator.session, moderator.settings, user_id)


router.include_router(admin)
