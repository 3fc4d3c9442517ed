"""Who may manage whom: only a superadmin acts on a superadmin (their account, keys, limits, groups, access rules,
an invite to become one); the CLI operator and the bootstrap (actor role None) may do anything.

Kept apart from the users package so that every accounts service (groups among them, which users imports) can ask.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.errors import RoleNotAllowed
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import User
from gatehouse.auth.roles import Role


def ensure_may_manage(*, actor_role: Role | None, target_role: Role | str, doing: str) -> None:
    """Only a superadmin may act on a superadmin (`doing`: "create", "change", "create keys for")."""
    if actor_role is None or actor_role is Role.SUPERADMIN:
        return  # None: the operator, from the CLI or at bootstrap
    if Role(target_role) is Role.SUPERADMIN:
        raise RoleNotAllowed(f"Only a superadmin can {doing} a superadmin.")


async def role_of(session: AsyncSession, *, actor: Actor) -> Role | None:
    """The role an acting user has now (read in the caller's transaction); None for the operator (the CLI, the
    bootstrap, a job, the config file), who may do anything. A user no longer found counts as the lowest role."""
    if actor.type not in ("user", "key") or actor.user_id is None:
        return None
    role = (await session.execute(select(User.role).where(User.id == actor.user_id))).scalar_one_or_none()
    return Role(role) if role is not None else Role.USER


async def ensure_actor_may_manage(session: AsyncSession, *, actor: Actor, target_role: Role | str, doing: str) -> None:
    """ensure_may_manage for services that are handed the actor only: its role is looked up."""
    ensure_may_manage(actor_role=await role_of(session, actor=actor), target_role=target_role, doing=doing)
