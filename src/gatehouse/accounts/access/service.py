"""Access rules: list, add, remove (each audited, and every replica told after commit), and explain a decision.
Services flush; the caller commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts import managing
from gatehouse.accounts.access.errors import InvalidRule, RuleNotFound
from gatehouse.accounts.access.events import AccessRuleAddedEvent, AccessRuleEvent, AccessRuleRemovedEvent
from gatehouse.accounts.access.models import AccessRule
from gatehouse.accounts.access.policy import AccessPolicy
from gatehouse.accounts.access.schemas import AccessCheck, RouteDecision, RuleCreate
from gatehouse.accounts.errors import GroupNotFound, KeyNotFound
from gatehouse.audit.service import record
from gatehouse.auth.access import load_principal
from gatehouse.auth.actor import Actor
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import Group, User
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.session import signal_after_commit

MAX_RULES = 10_000  # in all: every replica holds them in memory
RULES_OF = "change the access rules of"  # "Only a superadmin can change the access rules of a superadmin."


async def list_rules(
    session: AsyncSession, *, user_id: int | None = None, group_id: int | None = None
) -> list[AccessRule]:
    """The rules (of one user or one group, when given), oldest first."""
    query = select(AccessRule).order_by(AccessRule.id)
    if user_id is not None:
        query = query.where(AccessRule.user_id == user_id)
    if group_id is not None:
        query = query.where(AccessRule.group_id == group_id)
    return list((await session.execute(query)).scalars())


def _check_pattern(pattern: str) -> str:
    pattern = pattern.strip()
    if not pattern:
        raise InvalidRule("`pattern` is empty: give a model or upstream name, or a pattern such as `llama3*`.")
    if any(c.isspace() or ord(c) < 32 for c in pattern):
        raise InvalidRule(
            f"`pattern` {pattern!r} contains spaces or control characters: model and upstream names have none.",
            param="pattern",
        )
    if "[" in pattern or "]" in pattern:
        raise InvalidRule("`pattern` may use `*` and `?` only (no `[...]` classes).", param="pattern")
    return pattern


async def add_rule(session: AsyncSession, *, bus: EventBus, actor: Actor, rule: RuleCreate) -> tuple[AccessRule, bool]:
    """Add a rule (audited; in force on every replica once committed): (the rule, True) when added; (the existing
    rule, False) when the same one exists already; 409 when one for the same pattern has the other effect."""
    pattern = _check_pattern(rule.pattern)
    if rule.user_id is not None:
        user = await session.get(User, rule.user_id)
        if user is None:
            raise UserNotFound(f"No user with id {rule.user_id}.", param="user_id")
        await managing.ensure_actor_may_manage(session, actor=actor, target_role=user.role, doing=RULES_OF)
    if rule.group_id is not None and await session.get(Group, rule.group_id) is None:
        raise GroupNotFound(f"No group with id {rule.group_id}: list them with GET /admin/groups.", param="group_id")
    same = [
        r
        for r in await list_rules(session, user_id=rule.user_id, group_id=rule.group_id)
        if r.user_id == rule.user_id
        and r.group_id == rule.group_id
        and r.target == rule.target
        and r.pattern == pattern
    ]
    if same:
        if same[0].effect == rule.effect:
            return same[0], False
        raise InvalidRule(
            f"Rule {same[0].id} already says `{same[0].effect}` for {rule.target} `{pattern}` for this "
            f"{'user' if rule.user_id else 'group'}: remove it first (DELETE /admin/access/rules/{same[0].id}).",
            status=409,
            param="pattern",
        )
    count = len((await session.execute(select(AccessRule.id).limit(MAX_RULES))).all())
    if count >= MAX_RULES:
        raise InvalidRule(
            f"There are {MAX_RULES} access rules already: use patterns, or groups, to say more with fewer."
        )
    row = AccessRule(
        user_id=rule.user_id,
        group_id=rule.group_id,
        effect=rule.effect,
        target=rule.target,
        pattern=pattern,
        created_by=actor.user_id,
    )
    session.add(row)
    await session.flush()
    await record(session, _event(AccessRuleAddedEvent, row), actor=actor)
    signal_after_commit(session, bus, Signal.ACCESS_CHANGED, {})
    return row, True


def _event(kind: type[AccessRuleEvent], row: AccessRule) -> AccessRuleEvent:
    return kind(
        rule_id=row.id,
        user_id=row.user_id,
        group_id=row.group_id,
        effect=row.effect,
        target_kind=row.target,
        pattern=row.pattern,
    )


async def remove_rule(session: AsyncSession, *, bus: EventBus, actor: Actor, rule_id: int) -> AccessRule:
    """Remove a rule (audited; out of force on every replica once committed); 404 when there is none."""
    row = await session.get(AccessRule, rule_id)
    if row is None:
        raise RuleNotFound(f"No access rule with id {rule_id}: list them with GET /admin/access.")
    if row.user_id is not None and (user := await session.get(User, row.user_id)) is not None:
        await managing.ensure_actor_may_manage(session, actor=actor, target_role=user.role, doing=RULES_OF)
    await record(session, _event(AccessRuleRemovedEvent, row), actor=actor)
    await session.delete(row)
    await session.flush()
    signal_after_commit(session, bus, Signal.ACCESS_CHANGED, {})
    return row


async def check(
    session: AsyncSession,
    *,
    policy: AccessPolicy,
    upstreams: list[str],
    user_id: int,
    model: str,
    key_id: int | None = None,
) -> AccessCheck:
    """Explain whether a user (through one of their keys) may use `model` through each upstream serving it."""
    principal = await load_principal(session, user_id=user_id, key_id=key_id)
    if principal is None:
        if key_id is not None and await session.get(User, user_id) is not None:
            raise KeyNotFound(f"User {user_id} has no API key with id {key_id}.", param="key_id")
        raise UserNotFound(f"No user with id {user_id}.", param="user_id")
    routes = []
    for upstream in upstreams:
        decision = policy.decide(principal, model, upstream)
        routes.append(
            RouteDecision(
                upstream=upstream,
                allowed=decision.allowed,
                decided_by=decision.level.value,
                rule_id=decision.rule_id,
                group_id=decision.group_id,
            )
        )
    return AccessCheck(
        user_id=user_id,
        key_id=key_id,
        model=model,
        group_ids=list(principal.group_ids),
        allowed=any(r.allowed for r in routes),
        routes=routes,
    )
