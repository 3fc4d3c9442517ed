"""Seeding the demo's accounts through the same services the API uses (so each step is validated and audited as
`demo`): people of every role with a password and a key, groups with members and limits, access rules, a user's
monthly limit, pending invites, a project key bound to a group, and a price for the demo models."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.access import service as access
from gatehouse.accounts.access.schemas import RuleCreate
from gatehouse.accounts.budgets import service as budgets
from gatehouse.accounts.groups import service as groups
from gatehouse.accounts.invites import service as invites
from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.users import service as users
from gatehouse.auth.actor import Actor
from gatehouse.auth.roles import Role
from gatehouse.core.bus import EventBus
from gatehouse.db.base import utcnow
from gatehouse.demo.plan import (
    DOMAIN,
    GROUP_MARK,
    GROUPS,
    INVITES,
    PEOPLE,
    PRICE_SOURCE,
    PRICES,
    PROJECT_KEY,
    RULES,
    USER_LIMITS,
)
from gatehouse.limits.budget_schemas import LimitsUpdate
from gatehouse.limits.prices import service as prices

DEMO_ACTOR = Actor.system("demo")  # who acts, in the audit log, for everything the demo does


@dataclass
class Credential:
    """A demo person's sign-in: shown once, stored only as hashes."""

    email: str
    role: str
    password: str
    key: str


@dataclass
class SeededAccounts:
    """What was made, with the secrets to print once."""

    people: list[Credential] = field(default_factory=list)
    project_key: str = ""
    invites: list[tuple[str, str]] = field(default_factory=list)  # (email, token)
    groups: int = 0
    keys: int = 0
    access_rules: int = 0
    prices: list[str] = field(default_factory=list)


async def seed_accounts(session: AsyncSession, *, bus: EventBus, currency: str) -> SeededAccounts:
    """Create the demo's accounts in the caller's transaction (see the module docstring)."""
    made = SeededAccounts()
    user_ids: dict[str, int] = {}
    for person in PEOPLE:
        password = secrets.token_urlsafe(12)
        user = await users.create(
            session,
            actor=DEMO_ACTOR,
            actor_role=None,
            email=person.email,
            role=person.role,
            password=password,
            display_name=person.display_name,
        )
        user_ids[person.name] = user.id
        _, key = await keys.create(session, actor=DEMO_ACTOR, user_id=user.id, name="demo laptop")
        made.people.append(Credential(user.email, person.role.value, password, key))
        made.keys += 1

    group_ids: dict[str, int] = {}
    for name, (members, limits) in GROUPS.items():
        group = await groups.create(session, actor=DEMO_ACTOR, name=name, description=GROUP_MARK)
        group_ids[name] = group.id
        for member in members:
            await groups.add_member(session, bus=bus, actor=DEMO_ACTOR, group_id=group.id, user_id=user_ids[member])
        await _limits(session, bus, "group", group.id, limits)
        made.groups += 1
    for name, limits in USER_LIMITS.items():
        await _limits(session, bus, "user", user_ids[name], limits)

    for whose, effect, pattern in RULES:
        kind, name = whose.split(":", 1)
        rule = RuleCreate(
            user_id=user_ids[name] if kind == "user" else None,
            group_id=group_ids[name] if kind == "group" else None,
            effect=_effect(effect),
            pattern=pattern,
        )
        await access.add_rule(session, bus=bus, actor=DEMO_ACTOR, rule=rule)
        made.access_rules += 1

    owner, group_name, key_name = PROJECT_KEY
    _, made.project_key = await keys.create(
        session, actor=DEMO_ACTOR, user_id=user_ids[owner], name=key_name, settings={"group_id": group_ids[group_name]}
    )
    made.keys += 1

    for name, role in INVITES:
        email = f"{name}@{DOMAIN}"
        _, token = await invites.create(
            session,
            actor=DEMO_ACTOR,
            actor_role=Role.SUPERADMIN,
            email=email,
            role=role,
            max_uses=1,
            expires_in_hours=72,
        )
        made.invites.append((email, token))

    made.prices = await _prices(session, bus, currency, utcnow())
    return made


async def _limits(
    session: AsyncSession, bus: EventBus, scope: Literal["user", "group"], subject_id: int, limits: dict[str, object]
) -> None:
    update = LimitsUpdate.model_validate(limits)
    await budgets.set_limits(
        session, bus=bus, actor=DEMO_ACTOR, actor_role=None, scope=scope, subject_id=subject_id, update=update
    )


def _effect(effect: str) -> Literal["allow", "deny"]:
    return "deny" if effect == "deny" else "allow"


async def _prices(session: AsyncSession, bus: EventBus, currency: str, now: datetime) -> list[str]:
    """Price the demo models that have no price in force (an operator's own price is left alone)."""
    priced = []
    for model, (input_price, output_price) in PRICES.items():
        current = await prices.version_in_force(session, model=model, at=now)
        if current is not None and current.input_micros is not None:
            continue
        await prices.set_price(
            session,
            bus=bus,
            model=model,
            price=prices.price_of(input_price, output_price, None),
            currency=currency,
            actor=DEMO_ACTOR,
            source=PRICE_SOURCE,
        )
        priced.append(model)
    return priced
