"""Routes: /admin/groups (create, list, read, rename, delete; members) and /admin/users/{id}/groups. Admins
change, monitors read. Thin: parse, call accounts.groups, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.errors import GroupExists, GroupInUse, GroupNotFound, MembershipNotFound
from gatehouse.accounts.groups import service as groups
from gatehouse.accounts.groups.schemas import (
    MAX_NAME,
    GroupCreate,
    GroupDeleted,
    GroupDetail,
    GroupKeyRead,
    GroupMemberRead,
    GroupRead,
    GroupRef,
    GroupSummary,
    GroupUpdate,
    MembershipRead,
)
from gatehouse.auth.access import require
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, BusDep, SessionDep
from gatehouse.errors import errors
from gatehouse.fields import IdPath

router = APIRouter()
admin = APIRouter(prefix="/admin/groups", tags=["admin"])
ADMIN = [require(Role.ADMIN)]
MONITOR = [require(Role.MONITOR)]


@admin.post(
    "", responses=errors(GroupExists), response_model=GroupRead, status_code=status.HTTP_201_CREATED, dependencies=ADMIN
)
async def create_group(body: GroupCreate, actor: ActorDep, session: SessionDep) -> GroupRead:
    """Create a group (409 `group_exists` when the name is taken, whatever its case)."""
    group = await groups.create(session, actor=actor, name=body.name, description=body.description)
    return GroupRead.model_validate(group)


@admin.get("", response_model=list[GroupSummary], dependencies=MONITOR)
async def list_groups(
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=MAX_NAME, description="Part of a group's name.")] = None,
) -> list[GroupSummary]:
    """Every group by name, with how many members it has and how many keys are bound to it."""
    return [
        GroupSummary(**GroupRead.model_validate(row.group).model_dump(), members=row.members, keys=row.keys)
        for row in await groups.list_groups(session, search=q)
    ]


async def _detail(session: AsyncSession, group_id: int) -> GroupDetail:
    group = await groups.get_or_raise(session, group_id=group_id)
    members = [
        GroupMemberRead(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            role=user.role,
            status=user.status,
            added_at=membership.added_at,
        )
        for membership, user in await groups.members_of(session, group_id=group_id)
    ]
    keys = [
        GroupKeyRead(
            id=key.id, prefix=key.prefix, name=key.name, user_id=user.id, email=user.email, expires_at=key.expires_at
        )
        for key, user in await groups.bound_keys(session, group_id=group_id)
    ]
    return GroupDetail(**GroupRead.model_validate(group).model_dump(), members=members, keys=keys)


@admin.get("/{group_id}", responses=errors(GroupNotFound), response_model=GroupDetail, dependencies=MONITOR)
async def get_group(group_id: IdPath, session: SessionDep) -> GroupDetail:
    """One group, with its members and the keys bound to it."""
    return await _detail(session, group_id)


@admin.patch("/{group_id}", responses=errors(GroupNotFound, GroupExists), response_model=GroupRead, dependencies=ADMIN)
async def update_group(group_id: IdPath, body: GroupUpdate, actor: ActorDep, session: SessionDep) -> GroupRead:
    """Rename a group or change its description (only the fields sent change)."""
    group = await groups.update(session, actor=actor, group_id=group_id, name=body.name, description=body.description)
    return GroupRead.model_validate(group)


@admin.delete(
    "/{group_id}", responses=errors(GroupNotFound, GroupInUse), response_model=GroupDeleted, dependencies=ADMIN
)
async def delete_group(group_id: IdPath, actor: ActorDep, session: SessionDep, bus: BusDep) -> GroupDeleted:
    """Delete a group with its memberships and access rules; 409 `group_in_use` while keys are bound to it."""
    deleted = await groups.delete(session, bus=bus, actor=actor, group_id=group_id)
    return GroupDeleted(
        id=deleted.id,
        name=deleted.name,
        former_members=deleted.former_members,
        unbound_revoked_keys=deleted.unbound_revoked_keys,
    )


@admin.put(
    "/{group_id}/members/{user_id}",
    responses=errors(GroupNotFound, UserNotFound),
    response_model=MembershipRead,
    dependencies=ADMIN,
)
async def add_member(
    group_id: IdPath, user_id: IdPath, actor: ActorDep, session: SessionDep, bus: BusDep
) -> MembershipRead:
    """Add a user to a group (idempotent: a member already is answered the same, and not audited again)."""
    membership, added = await groups.add_member(session, bus=bus, actor=actor, group_id=group_id, user_id=user_id)
    return MembershipRead(group_id=group_id, user_id=user_id, added_at=membership.added_at, added=added)


@admin.delete(
    "/{group_id}/members/{user_id}",
    responses=errors(GroupNotFound, UserNotFound, MembershipNotFound),
    response_model=MembershipRead,
    dependencies=ADMIN,
)
async def remove_member(
    group_id: IdPath, user_id: IdPath, actor: ActorDep, session: SessionDep, bus: BusDep
) -> MembershipRead:
    """Remove a user from a group (404 when not a member; 409 `group_in_use` while keys of theirs are bound to it)."""
    membership = await groups.remove_member(session, bus=bus, actor=actor, group_id=group_id, user_id=user_id)
    return MembershipRead(group_id=group_id, user_id=user_id, added_at=membership.added_at, added=False)


@router.get(
    "/admin/users/{user_id}/groups",
    responses=errors(UserNotFound),
    response_model=list[GroupRef],
    tags=["admin"],
    dependencies=MONITOR,
)
async def user_groups(user_id: IdPath, session: SessionDep) -> list[GroupRef]:
    """The groups a user belongs to."""
    return [
        GroupRef(id=group.id, name=group.name, added_at=membership.added_at)
        for group, membership in await groups.groups_of(session, user_id=user_id)
    ]


router.include_router(admin)
