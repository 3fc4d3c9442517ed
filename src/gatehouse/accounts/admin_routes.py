"""Routes: /admin/users (list, create, read, change, disable, enable, block, unblock). Thin: parse, call
accounts.admin or accounts.service, shape the answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts import admin, service
from gatehouse.accounts.admin_schemas import BlockRequest, UserAdminRead, UserAdminUpdate, UserPage
from gatehouse.accounts.schemas import UserCreate
from gatehouse.audit.service import record
from gatehouse.auth.access import require
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import User
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.db.base import utcnow
from gatehouse.deps import ActorDep, PrincipalDep, RuntimeDep, SessionDep
from gatehouse.fields import MAX_DB_INT, IdPath
from gatehouse.limits import quotas
from gatehouse.runtime import Runtime

router = APIRouter(tags=["admin"])
ADMIN = [require(Role.ADMIN)]


def _read(user: User, messages: int = 0, tokens: int = 0) -> UserAdminRead:
    now = utcnow()
    blocked = user.blocked_at is not None and (user.blocked_until is None or user.blocked_until > now)
    return UserAdminRead.model_validate(
        {
            **{k: getattr(user, k) for k in UserAdminRead.model_fields if hasattr(user, k)},
            "blocked": blocked,
            "messages_today": messages,
            "tokens_today": tokens,
            "messages_percent": quotas.percent(messages, user.messages_per_day),
            "tokens_percent": quotas.percent(tokens, user.tokens_per_day),
        }
    )


async def _read_one(session: SessionDep, runtime: RuntimeDep, user_id: int) -> UserAdminRead:
    user = await service.get_user_or_raise(session, user_id=user_id)
    day = quotas.quota_day(runtime.settings.quota_timezone)
    usage = await quotas.usage_for(session, user_id=user_id, day=day)
    return _read(user, usage.messages, usage.tokens)


@router.get("/admin/users", response_model=UserPage, dependencies=ADMIN)
async def list_users(
    session: SessionDep,
    runtime: RuntimeDep,
    q: str | None = Query(None, max_length=320, description="Part of an email or display name."),
    role: Role | None = None,
    status: UserStatus | None = None,
    before: int | None = Query(None, ge=1, le=MAX_DB_INT, description="Cursor: the `next_cursor` of a page."),
    limit: int = Query(50, ge=1, le=500),
) -> UserPage:
    """Users, newest first, with today's usage and the percentage of their quotas."""
    day = quotas.quota_day(runtime.settings.quota_timezone)
    rows = await admin.list_users(
        session, day=day, search=q, role=role, status=status, before_id=before, limit=limit + 1
    )
    page = rows[:limit]
    items = [_read(r.user, r.messages, r.tokens) for r in page]
    return UserPage(items=items, next_cursor=page[-1].user.id if len(rows) > limit else None)


@router.post("/admin/users", response_model=UserAdminRead, status_code=status.HTTP_201_CREATED, dependencies=ADMIN)
async def create_user(
    body: UserCreate, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> UserAdminRead:
    """Create a user (only a superadmin creates superadmins); quotas default to DEFAULT_*_PER_DAY."""
    settings = runtime.settings
    user = await service.create_user(
        session,
        email=body.email,
        role=body.role,
        password=body.password,
        display_name=body.display_name,
        messages_per_day=settings.default_messages_per_day,
        tokens_per_day=settings.default_tokens_per_day,
        actor_role=principal.role,
    )
    await session.flush()
    await record(
        session,
        actor=actor,
        action="user.created",
        target_type="user",
        target_id=user.id,
        details={
            "email": user.email,
            "role": user.role,
            "messages_per_day": user.messages_per_day,
            "tokens_per_day": user.tokens_per_day,
        },
    )
    return _read(user)


@router.get("/admin/users/{user_id}", response_model=UserAdminRead, dependencies=ADMIN)
async def get_user(user_id: IdPath, session: SessionDep, runtime: RuntimeDep) -> UserAdminRead:
    """One user, with today's usage."""
    return await _read_one(session, runtime, user_id)


async def _update(
    session: AsyncSession, runtime: Runtime, actor: Actor, by: Principal, user_id: int, changes: dict[str, Any]
) -> UserAdminRead:
    await admin.update_user(
        session, bus=runtime.bus, events=runtime.feed, actor=actor, by=by, user_id=user_id, changes=changes
    )
    return await _read_one(session, runtime, user_id)


@router.patch("/admin/users/{user_id}", response_model=UserAdminRead, dependencies=ADMIN)
async def update_user(
    user_id: IdPath,
    body: UserAdminUpdate,
    principal: PrincipalDep,
    actor: ActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> UserAdminRead:
    """Change a user's name, role, status or daily quotas (null: unlimited); each change is audited."""
    return await _update(session, runtime, actor, principal, user_id, body.model_dump(include=body.model_fields_set))


@router.post("/admin/users/{user_id}/disable", response_model=UserAdminRead, dependencies=ADMIN)
async def disable_user(
    user_id: IdPath, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> UserAdminRead:
    """Disable a user: their sessions end and their keys stop working on every replica at once."""
    return await _update(session, runtime, actor, principal, user_id, {"status": UserStatus.DISABLED})


@router.post("/admin/users/{user_id}/enable", response_model=UserAdminRead, dependencies=ADMIN)
async def enable_user(
    user_id: IdPath, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> UserAdminRead:
    """Re-enable a disabled user."""
    return await _update(session, runtime, actor, principal, user_id, {"status": UserStatus.ACTIVE})


@router.post("/admin/users/{user_id}/block", response_model=UserAdminRead, dependencies=[require(Role.MONITOR)])
async def block_user(
    user_id: IdPath,
    body: BlockRequest,
    principal: PrincipalDep,
    actor: ActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> UserAdminRead:
    """Block a user at once on every replica (403 account_blocked), for good or `until` a time."""
    await admin.block(
        session,
        bus=runtime.bus,
        events=runtime.feed,
        actor=actor,
        by=principal,
        user_id=user_id,
        reason=body.reason,
        until=body.until,
    )
    return await _read_one(session, runtime, user_id)


@router.post("/admin/users/{user_id}/unblock", response_model=UserAdminRead, dependencies=[require(Role.MONITOR)])
async def unblock_user(
    user_id: IdPath, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> UserAdminRead:
    """Lift a block."""
    await admin.unblock(session, bus=runtime.bus, events=runtime.feed, actor=actor, by=principal, user_id=user_id)
    return await _read_one(session, runtime, user_id)
