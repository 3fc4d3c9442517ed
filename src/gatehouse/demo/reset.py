"""Removing the demo's data, and nothing else: its people (through the deletion-request service, so their keys,
sessions, usage counters, budget counters, request-log rows and stored responses go with them, each audited as
`user.deleted`), the invites addressed to the demo's domain, its groups (with their memberships, rules and
counters), the rules of its people, the budget alerts of all of them, and the prices it set. The audit log stays as
it is (append-only, hash-chained): the removal is one more event, `demo.reset`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.access.models import AccessRule
from gatehouse.accounts.groups import service as groups
from gatehouse.accounts.invites.models import Invite
from gatehouse.alerts.models import BudgetAlert
from gatehouse.audit.service import record
from gatehouse.auth.models import ApiKey, Group, User
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.session import signal_after_commit
from gatehouse.demo.events import DemoResetEvent
from gatehouse.demo.plan import DOMAIN, PRICE_SOURCE, group_name_is_demo
from gatehouse.demo.seed import DEMO_ACTOR
from gatehouse.exports.erasure import erase_user
from gatehouse.limits.models import BudgetCounter, ModelPrice


@dataclass(frozen=True)
class Removed:
    """What a reset removed, by kind."""

    users: int
    groups: int
    invites: int
    access_rules: int
    prices: int
    budget_alerts: int


async def demo_user_ids(session: AsyncSession) -> list[int]:
    """The demo's people (by their address)."""
    return list((await session.execute(select(User.id).where(User.email.like(f"%@{DOMAIN}")))).scalars())


async def demo_group_ids(session: AsyncSession) -> list[int]:
    """The demo's groups (by their name and description)."""
    rows = (await session.execute(select(Group.id, Group.name, Group.description))).all()
    return [group_id for group_id, name, description in rows if group_name_is_demo(name, description)]


async def remove_demo(session: AsyncSession, *, bus: EventBus) -> Removed:
    """Remove the demo's data in the caller's transaction, audited (see the module docstring)."""
    user_ids = await demo_user_ids(session)
    group_ids = await demo_group_ids(session)
    key_ids = list((await session.execute(select(ApiKey.id).where(ApiKey.user_id.in_(user_ids)))).scalars())
    subjects = or_(
        (BudgetAlert.scope == "u") & BudgetAlert.subject_id.in_(user_ids),
        (BudgetAlert.scope == "g") & BudgetAlert.subject_id.in_(group_ids),
        (BudgetAlert.scope == "k") & BudgetAlert.subject_id.in_(key_ids),
    )
    alerts = _count(await session.execute(delete(BudgetAlert).where(subjects)))
    rules = _count(
        await session.execute(
            delete(AccessRule).where(or_(AccessRule.user_id.in_(user_ids), AccessRule.group_id.in_(group_ids)))
        )
    )
    invites = _count(await session.execute(delete(Invite).where(Invite.email.like(f"%@{DOMAIN}"))))
    for user_id in user_ids:
        await erase_user(
            session, bus=bus, actor=DEMO_ACTOR, actor_role=None, user_id=user_id, reason="gatehouse demo reset"
        )
    await session.execute(
        delete(BudgetCounter).where((BudgetCounter.scope == "g") & BudgetCounter.subject_id.in_(group_ids))
    )
    for group_id in group_ids:
        await groups.delete(session, bus=bus, actor=DEMO_ACTOR, group_id=group_id)
    prices = _count(await session.execute(delete(ModelPrice).where(ModelPrice.source == PRICE_SOURCE)))
    await session.flush()
    removed = Removed(len(user_ids), len(group_ids), invites, rules, prices, alerts)
    await record(session, DemoResetEvent(**removed.__dict__), actor=DEMO_ACTOR)
    for signal in (Signal.ACCESS_CHANGED, Signal.BUDGETS_CHANGED, Signal.PRICES_CHANGED):
        signal_after_commit(session, bus, signal, {})
    return removed


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
