"""Groups: create, rename, describe, delete; add and remove members. Every change is audited, and once committed
every replica is told: a member's cached principal carries their groups (USER_CHANGED for each user whose groups
changed), and a deleted group's access rules are gone with it (ACCESS_CHANGED). Services flush; the caller commits.

Changes to a group's members and to the keys bound to it lock the group's row first (PostgreSQL; SQLite has one
writer), so a member cannot leave while one of their keys is being bound to the group, nor a group be deleted
while a key is being bound to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy import update as update_rows
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts import managing
from gatehouse.accounts.errors import GroupExists, GroupInUse, GroupNotFound, MembershipNotFound, NotGroupMember
from gatehouse.accounts.events import (
    GroupCreatedEvent,
    GroupDeletedEvent,
    GroupMemberAddedEvent,
    GroupMemberRemovedEvent,
    GroupRenamedEvent,
    GroupUpdatedEvent,
)
from gatehouse.accounts.groups.schemas import clean_description, clean_name
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import ApiKey, Group, GroupMember, User
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.session import signal_after_commit
from gatehouse.errors import BadRequest
from gatehouse.limits.models import BudgetCounter

NAMED_KEYS = 10  # an in-use error names this many keys at most
MEMBERSHIPS = "change the groups of"  # "Only a superadmin can change the groups of a superadmin."


@dataclass
class GroupCounts:
    """A group with how many members it has and how many keys (not revoked) are bound to it."""

    group: Group
    members: int
    keys: int


@dataclass
class Deleted:
    """What a deletion took with it."""

    id: int
    name: str
    former_members: list[int]
    unbound_revoked_keys: list[int]


def _checked(clean: Callable[[str], str], field: str, value: str) -> str:
    """A value as the API's validation would have it (the CLI calls services with what was typed)."""
    try:
        return clean(value)
    except ValueError as exc:
        raise BadRequest(f"Invalid {field}: {exc}.", param=field) from exc


async def get(session: AsyncSession, *, group_id: int) -> Group | None:
    """A group by id."""
    return await session.get(Group, group_id)


async def get_or_raise(session: AsyncSession, *, group_id: int, lock: bool = False) -> Group:
    """A group by id, or 404 `group_not_found`; `lock`: lock its row until the transaction ends."""
    group = await session.get(Group, group_id, with_for_update=lock)
    if group is None:
        raise GroupNotFound(f"No group with id {group_id}: GET /admin/groups lists them.")
    return group


async def _user_or_raise(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"No user with id {user_id}.")
    return user


async def _ensure_name_free(session: AsyncSession, name: str, *, keep_id: int | None = None) -> None:
    # Compared in Python, casefolded: SQLite's lower() folds ASCII only, and an organisation has few groups.
    wanted = name.casefold()
    for group_id, taken in (await session.execute(select(Group.id, Group.name))).all():
        if taken.casefold() == wanted and group_id != keep_id:
            raise GroupExists(f"A group named {taken!r} exists already (id {group_id}): choose another name.")


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        # In a savepoint: a concurrent create of the same name loses with a 409, not a 500, and the caller's
        # transaction stays usable.
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise GroupExists(f"A group named {name!r} exists already: choose another name.") from exc


async def create(session: AsyncSession, *, actor: Actor, name: str, description: str = "") -> Group:
    """A new group, audited; 409 `group_exists` when the name is taken (whatever its case)."""
    name = _checked(clean_name, "name", name)
    description = _checked(clean_description, "description", description)
    await _ensure_name_free(session, name)
    group = Group(name=name, description=description)
    session.add(group)
    await _flush_named(session, name)
    await record(session, GroupCreatedEvent(group_id=group.id, name=name, description=description), actor=actor)
    return group


async def update(
    session: AsyncSession, *, actor: Actor, group_id: int, name: str | None = None, description: str | None = None
) -> Group:
    """Rename a group and/or change its description (None: unchanged), each change audited."""
    group = await get_or_raise(session, group_id=group_id)
    if name is not None:
        name = _checked(clean_name, "name", name)
        if name != group.name:
            await _ensure_name_free(session, name, keep_id=group.id)
            before, group.name = group.name, name
            await _flush_named(session, name)
            await record(session, GroupRenamedEvent(group_id=group.id, before=before, after=name), actor=actor)
    if description is not None:
        description = _checked(clean_description, "description", description)
        if description != group.description:
            change = {"before": group.description, "after": description}
            group.description = description
            await session.flush()
            await record(
                session, GroupUpdatedEvent(group_id=group.id, name=group.name, description=change), actor=actor
            )
    return group


async def list_groups(session: AsyncSession, *, search: str | None = None) -> list[GroupCounts]:
    """Every group by name (optionally those whose name holds `search`), with its member and bound-key counts."""
    members = select(func.count()).where(GroupMember.group_id == Group.id).correlate(Group).scalar_subquery()
    keys = (
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.group_id == Group.id, ApiKey.revoked_at.is_(None))
        .correlate(Group)
        .scalar_subquery()
    )
    query = select(Group, members, keys).order_by(Group.name)
    if search and search.strip():
        escaped = search.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(Group.name).like(f"%{escaped}%", escape="\\"))
    return [GroupCounts(group, m, k) for group, m, k in (await session.execute(query)).all()]


async def members_of(session: AsyncSession, *, group_id: int) -> list[tuple[GroupMember, User]]:
    """A group's memberships with their users, by email."""
    query = (
        select(GroupMember, User)
        .join(User, User.id == GroupMember.user_id)
        .where(GroupMember.group_id == group_id)
        .order_by(User.email)
    )
    return [(m, u) for m, u in (await session.execute(query)).all()]


async def bound_keys(session: AsyncSession, *, group_id: int, user_id: int | None = None) -> list[tuple[ApiKey, User]]:
    """The keys (not revoked) bound to a group, optionally one user's only, newest first, with their owners."""
    query = (
        select(ApiKey, User)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.group_id == group_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id.desc())
    )
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return [(k, u) for k, u in (await session.execute(query)).all()]


async def groups_of(session: AsyncSession, *, user_id: int) -> list[tuple[Group, GroupMember]]:
    """The groups a user belongs to, by name, with their memberships; 404 when there is no such user."""
    await _user_or_raise(session, user_id)
    query = (
        select(Group, GroupMember)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user_id)
        .order_by(Group.name)
    )
    return [(g, m) for g, m in (await session.execute(query)).all()]


async def _membership(session: AsyncSession, group_id: int, user_id: int) -> GroupMember | None:
    return await session.get(GroupMember, (group_id, user_id))


def _named(keys: list[tuple[ApiKey, User]]) -> str:
    shown = ", ".join(f"{k.id} ({k.prefix}..., {k.name!r} of {u.email})" for k, u in keys[:NAMED_KEYS])
    return shown + (f" and {len(keys) - NAMED_KEYS} more" if len(keys) > NAMED_KEYS else "")


async def add_member(
    session: AsyncSession, *, bus: EventBus, actor: Actor, group_id: int, user_id: int
) -> tuple[GroupMember, bool]:
    """Add a user to a group (idempotent): (the membership, whether it is new). Audited, and signalled, when new."""
    group = await get_or_raise(session, group_id=group_id, lock=True)
    user = await _user_or_raise(session, user_id)
    # A group's access rules and limits would apply to them: only a superadmin changes a superadmin's groups.
    await managing.ensure_actor_may_manage(session, actor=actor, target_role=user.role, doing=MEMBERSHIPS)
    existing = await _membership(session, group_id, user_id)
    if existing is not None:
        return existing, False
    membership = GroupMember(group_id=group_id, user_id=user_id)
    try:
        async with session.begin_nested():  # a concurrent add of the same member (SQLite) lands here
            session.add(membership)
    except IntegrityError:
        existing = await _membership(session, group_id, user_id)
        if existing is None:
            raise
        return existing, False
    await record(session, GroupMemberAddedEvent(group_id=group_id, group=group.name, user_id=user_id), actor=actor)
    signal_after_commit(session, bus, Signal.USER_CHANGED, {"user_id": user_id})
    return membership, True


async def remove_member(
    session: AsyncSession, *, bus: EventBus, actor: Actor, group_id: int, user_id: int
) -> GroupMember:
    """Remove a user from a group: 404 when they are not a member, 409 `group_in_use` while keys of theirs are
    bound to it."""
    group = await get_or_raise(session, group_id=group_id, lock=True)
    membership = await _membership(session, group_id, user_id)
    if membership is None:
        raise MembershipNotFound(f"User {user_id} is not a member of group {group_id} ({group.name}).")
    member = await _user_or_raise(session, user_id)
    await managing.ensure_actor_may_manage(session, actor=actor, target_role=member.role, doing=MEMBERSHIPS)
    keys = await bound_keys(session, group_id=group_id, user_id=user_id)
    if keys:
        raise GroupInUse(
            f"User {user_id} has {len(keys)} key(s) bound to group {group_id} ({group.name}): {_named(keys)}. "
            "Bind them to another of their groups or to none (PATCH /admin/keys/ID with group_id), or revoke them, "
            "then remove the member."
        )
    await session.delete(membership)
    await session.flush()
    await record(session, GroupMemberRemovedEvent(group_id=group_id, group=group.name, user_id=user_id), actor=actor)
    signal_after_commit(session, bus, Signal.USER_CHANGED, {"user_id": user_id})
    return membership


async def delete(session: AsyncSession, *, bus: EventBus, actor: Actor, group_id: int) -> Deleted:
    """Delete a group with its memberships and access rules (by cascade): 409 `group_in_use` while keys (not
    revoked) are bound to it. Revoked keys still bound to it are unbound."""
    group = await get_or_raise(session, group_id=group_id, lock=True)
    keys = await bound_keys(session, group_id=group_id)
    if keys:
        raise GroupInUse(
            f"Group {group_id} ({group.name}) has {len(keys)} key(s) bound to it: {_named(keys)}. Bind them to "
            "another group or to none (PATCH /admin/keys/ID with group_id), or revoke them, then delete the group."
        )
    members = [m.user_id for m, _ in await members_of(session, group_id=group_id)]
    unbound = list(
        (
            await session.execute(
                update_rows(ApiKey)
                .where(ApiKey.group_id == group_id, ApiKey.revoked_at.is_not(None))
                .values(group_id=None)
                .returning(ApiKey.id)
            )
        ).scalars()
    )
    name, description = group.name, group.description
    try:
        # The FK refuses the deletion if a key was bound meanwhile (SQLite takes no row lock above).
        async with session.begin_nested():
            await session.delete(group)
    except IntegrityError as exc:
        raise GroupInUse(f"Keys were bound to group {group_id} ({name}) meanwhile: look again, then retry.") from exc
    # Its budgets' counters: no foreign key holds them.
    await session.execute(
        sql_delete(BudgetCounter).where(BudgetCounter.scope == "g", BudgetCounter.subject_id == group_id)
    )
    event = GroupDeletedEvent(
        group_id=group_id,
        name=name,
        description=description,
        members=sorted(members),
        unbound_revoked_keys=sorted(unbound),
    )
    await record(session, event, actor=actor)
    for user_id in members:
        signal_after_commit(session, bus, Signal.USER_CHANGED, {"user_id": user_id})
    signal_after_commit(session, bus, Signal.ACCESS_CHANGED, {})
    return Deleted(group_id, name, sorted(members), sorted(unbound))


async def ensure_member(session: AsyncSession, *, group_id: int, user_id: int) -> Group:
    """The group a key of `user_id` is to be bound to, locked: 404 when there is no such group, 409
    `not_group_member` when the user does not belong to it."""
    group = await get_or_raise(session, group_id=group_id, lock=True)
    if await _membership(session, group_id, user_id) is None:
        raise NotGroupMember(
            f"The key's owner (user {user_id}) is not a member of group {group_id}: a key may be bound only to a "
            f"group its owner belongs to. Add them first (PUT /admin/groups/{group_id}/members/{user_id}), or "
            "choose one of their groups.",
            param="group_id",
        )
    return group
