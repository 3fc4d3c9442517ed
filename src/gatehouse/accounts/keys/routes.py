"""Routes: /me/keys (the caller's API keys), /admin/keys (every user's: list, change settings, revoke) and
/admin/users/{id}/keys (a key for another user)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from gatehouse.accounts.errors import (
    GroupNotFound,
    InvalidExpiry,
    KeyInUse,
    KeyNotFound,
    KeySettingNotAllowed,
    NotGroupMember,
    RoleNotAllowed,
)
from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.keys.schemas import KeyCreate, KeyCreated, KeyPage, KeyRead, KeySettingsUpdate
from gatehouse.auth.access import require
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import ApiKey
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, BusDep, PrincipalDep, SessionDep
from gatehouse.errors import errors
from gatehouse.fields import MAX_DB_INT, IdPath
from gatehouse.limits.deps import rate_limited

router = APIRouter()
MAX_PAGE = 500
USER = [require(Role.USER)]
ADMIN = [require(Role.ADMIN)]


def _not_in_use(principal: Principal, key_id: int) -> None:
    """Refuse to revoke the key this request is made with (one request would lock its caller out); another key or
    the console can. Changing it stays allowed: its restrictions apply to the gateway, not to these routes."""
    if principal.key_id == key_id:
        raise KeyInUse(
            f"Key {key_id} is the key this request is made with: revoke it with another key or in the console, so "
            "you are not locked out.",
            param="key_id",
        )


def _created(key: ApiKey, raw: str) -> KeyCreated:
    return KeyCreated.model_validate({**KeyRead.model_validate(key).model_dump(), "key": raw})


@router.get("/me/keys", response_model=list[KeyRead], tags=["me"], dependencies=USER)
async def list_my_keys(principal: PrincipalDep, session: SessionDep) -> list[KeyRead]:
    """The caller's API keys (never the keys themselves: only their prefixes)."""
    return [KeyRead.model_validate(k) for k in await keys.list_for_user(session, user_id=principal.user_id)]


@router.post(
    "/me/keys",
    responses=errors(InvalidExpiry, KeySettingNotAllowed, GroupNotFound, NotGroupMember),
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["me"],
    dependencies=[*USER, rate_limited("key_create")],
)
async def create_my_key(body: KeyCreate, principal: PrincipalDep, actor: ActorDep, session: SessionDep) -> KeyCreated:
    """Create an API key for the caller, optionally bound to one of their groups and restricted; the key is in this
    response only. Only administrators set acts_for_users."""
    key, raw = await keys.create_own(
        session,
        actor=actor,
        role=principal.role,
        user_id=principal.user_id,
        name=body.name,
        expires_at=body.expires_at,
        settings=body.settings(),
    )
    return _created(key, raw)


@router.patch(
    "/me/keys/{key_id}",
    responses=errors(KeyNotFound, KeySettingNotAllowed, GroupNotFound, NotGroupMember),
    response_model=KeyRead,
    tags=["me"],
    dependencies=USER,
)
async def change_my_key(
    key_id: IdPath, body: KeySettingsUpdate, principal: PrincipalDep, actor: ActorDep, session: SessionDep, bus: BusDep
) -> KeyRead:
    """Restrict one of the caller's keys further (models, surfaces, networks, rate); only administrators may lift a
    restriction, change a key's group or set acts_for_users (on their own keys too)."""
    key = await keys.change_own_settings(
        session,
        bus=bus,
        actor=actor,
        role=principal.role,
        user_id=principal.user_id,
        key_id=key_id,
        changes=body.settings(),
    )
    return KeyRead.model_validate(key)


@router.delete(
    "/me/keys/{key_id}", responses=errors(KeyNotFound, KeyInUse), response_model=KeyRead, tags=["me"], dependencies=USER
)
async def revoke_my_key(
    key_id: IdPath, principal: PrincipalDep, actor: ActorDep, session: SessionDep, bus: BusDep
) -> KeyRead:
    """Revoke one of the caller's keys; it stops working on every replica at once."""
    _not_in_use(principal, key_id)
    key = await keys.revoke_own(session, bus=bus, actor=actor, user_id=principal.user_id, key_id=key_id)
    return KeyRead.model_validate(key)


@router.get("/admin/keys", response_model=KeyPage, tags=["admin"], dependencies=ADMIN)
async def list_keys(
    session: SessionDep,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="Only this user's keys.")] = None,
    group_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="Only keys bound to this group.")] = None,
    state: Annotated[keys.KeyState | None, Query(description="active, revoked or expired.")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="The previous page's next_cursor.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> KeyPage:
    """Every user's API keys, newest first, filtered by user, group and state, a page at a time."""
    found = await keys.list_keys(
        session, user_id=user_id, group_id=group_id, state=state, before_id=before, limit=limit + 1
    )
    page = found[:limit]
    return KeyPage(
        items=[KeyRead.model_validate(k) for k in page], next_cursor=page[-1].id if len(found) > limit else None
    )


@router.patch(
    "/admin/keys/{key_id}",
    responses=errors(KeyNotFound, RoleNotAllowed, GroupNotFound, NotGroupMember),
    response_model=KeyRead,
    tags=["admin"],
    dependencies=ADMIN,
)
async def change_key(
    key_id: IdPath, body: KeySettingsUpdate, principal: PrincipalDep, actor: ActorDep, session: SessionDep, bus: BusDep
) -> KeyRead:
    """Change any key's settings (group, acts_for_users, restrictions; null lifts one), audited and in force on
    every replica from the next request; a superadmin's keys only as a superadmin."""
    key = await keys.change_settings_as_admin(
        session, bus=bus, actor=actor, actor_role=principal.role, key_id=key_id, changes=body.settings()
    )
    return KeyRead.model_validate(key)


@router.delete(
    "/admin/keys/{key_id}",
    responses=errors(KeyNotFound, RoleNotAllowed, KeyInUse),
    response_model=KeyRead,
    tags=["admin"],
    dependencies=ADMIN,
)
async def revoke_key(
    key_id: IdPath, principal: PrincipalDep, actor: ActorDep, session: SessionDep, bus: BusDep
) -> KeyRead:
    """Revoke any user's key (a superadmin's only as a superadmin); every replica refuses it at once."""
    _not_in_use(principal, key_id)
    key = await keys.revoke_as_admin(session, bus=bus, actor=actor, actor_role=principal.role, key_id=key_id)
    return KeyRead.model_validate(key)


@router.post(
    "/admin/users/{user_id}/keys",
    responses=errors(UserNotFound, InvalidExpiry, RoleNotAllowed, KeySettingNotAllowed, GroupNotFound, NotGroupMember),
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
    dependencies=[*ADMIN, rate_limited("key_create")],
)
async def create_user_key(
    user_id: IdPath, body: KeyCreate, principal: PrincipalDep, actor: ActorDep, session: SessionDep
) -> KeyCreated:
    """Create an API key for another user (e.g. a service account, a project key bound to a group, a front-end's
    key that acts for users); the key is in this response only."""
    key, raw = await keys.create_for_user(
        session,
        actor=actor,
        actor_role=principal.role,
        user_id=user_id,
        name=body.name,
        expires_at=body.expires_at,
        settings=body.settings(),
    )
    return _created(key, raw)
