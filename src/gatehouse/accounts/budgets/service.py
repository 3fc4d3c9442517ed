"""Budgets: set a subject's limits (audited; every replica told after commit) and read the state of its budgets
from their counters. Services flush; the caller commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.budgets.events import BudgetLimitsChangedEvent
from gatehouse.accounts.errors import GroupNotFound, KeyNotFound
from gatehouse.accounts.users import service as users
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import ApiKey, Group, GroupMember, User
from gatehouse.auth.roles import Role
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.session import signal_after_commit
from gatehouse.limits.budget_schemas import BudgetState, LimitsUpdate, Measure
from gatehouse.limits.budgets import Budget, period_end, period_start
from gatehouse.limits.models import BudgetCounter, UsageCounter
from gatehouse.limits.prices.money import decimal_of_nanos, json_number
from gatehouse.limits.usage import percent

ScopeName = Literal["user", "group", "key"]
SCOPES: dict[str, Literal["u", "g", "k"]] = {"user": "u", "group": "g", "key": "k"}
MODELS: dict[str, Any] = {"user": User, "group": Group, "key": ApiKey}


async def subject_or_raise(session: AsyncSession, scope: ScopeName, subject_id: int) -> Any:
    """The user, group or key, or its 404."""
    row = await session.get(MODELS[scope], subject_id)
    if row is None:
        error = {"user": UserNotFound, "group": GroupNotFound, "key": KeyNotFound}[scope]
        raise error(f"No {scope} with id {subject_id}.")
    return row


def _shown(column: str, value: int | None) -> Any:
    if value is not None and column.startswith("spend_"):
        return str(decimal_of_nanos(value))
    return value


async def set_limits(
    session: AsyncSession,
    *,
    bus: EventBus,
    actor: Actor,
    actor_role: Role | None,
    scope: ScopeName,
    subject_id: int,
    update: LimitsUpdate,
) -> Any:
    """Change a subject's limits (those sent); audited, and in force on every replica within a second."""
    row = await subject_or_raise(session, scope, subject_id)
    if scope == "user":
        users.ensure_may_manage(actor_role=actor_role, target_role=row.role, doing="change the limits of")
    elif scope == "key":
        owner = await users.get_or_raise(session, user_id=row.user_id)
        users.ensure_may_manage(actor_role=actor_role, target_role=owner.role, doing="change the limits of keys of")
    changes: dict[str, dict[str, Any]] = {}
    for column, value in update.columns().items():
        before = getattr(row, column)
        if before != value:
            changes[column.removesuffix("_nanos")] = {"before": _shown(column, before), "after": _shown(column, value)}
            setattr(row, column, value)
    if not changes:
        return row
    await session.flush()
    await record(session, BudgetLimitsChangedEvent(subject=f"{scope}:{subject_id}", changes=changes), actor=actor)
    signal_after_commit(session, bus, Signal.BUDGETS_CHANGED, {})
    return row


# --- the state of budgets --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    scope: ScopeName
    id: int
    name: str
    row: Any  # its limits


def _measure(used: int, held: int, limit: int | None, *, money: bool = False) -> Measure:
    def shown(value: int) -> int | float:
        return json_number(decimal_of_nanos(value)) if money else value

    return Measure(
        used=shown(used),
        held=shown(held),
        limit=None if limit is None else shown(limit),
        percent=percent(used, limit),
    )


def _state(
    subject: Subject, period: Literal["d", "m"], start: date, usage: Any, timezone: str, currency: str
) -> BudgetState:
    row = subject.row
    per = "day" if period == "d" else "month"
    messages, tokens, cost, held_tokens, held_cost = usage or (0, 0, 0, 0, 0)
    return BudgetState(
        scope=subject.scope,
        subject_id=subject.id,
        name=subject.name,
        period=per,
        start=start,
        resets_at=period_end(timezone, period, start),
        counted=usage is not None or (subject.scope == "user" and period == "d"),
        messages=_measure(messages, 0, getattr(row, f"messages_per_{per}")),
        tokens=_measure(tokens, held_tokens, getattr(row, f"tokens_per_{per}")),
        spend=_measure(cost, held_cost, getattr(row, f"spend_per_{per}_nanos"), money=True),
        currency=currency,
    )


def _limited(row: Any, per: str) -> bool:
    return any(getattr(row, f"{m}_per_{per}") is not None for m in ("messages", "tokens")) or (
        getattr(row, f"spend_per_{per}_nanos") is not None
    )


async def budget_states(
    session: AsyncSession, subjects: list[Subject], *, timezone: str, currency: str, now: datetime | None = None
) -> list[BudgetState]:
    """The current day and month of each subject: the user's day always (its counter is always kept), and every
    other budget that has a limit (the others have no counter: their usage is in the request log's reports)."""
    now = now or datetime.now(UTC)
    states: list[BudgetState] = []
    wanted: list[tuple[Subject, Literal["d", "m"], date, str]] = []
    for subject in subjects:
        for period in ("d", "m"):
            start = period_start(timezone, period, now)
            if subject.scope == "user" and period == "d":
                counter = (
                    await session.execute(
                        select(
                            UsageCounter.messages,
                            UsageCounter.tokens,
                            UsageCounter.cost_nanos,
                            UsageCounter.reserved_tokens,
                            UsageCounter.reserved_cost,
                        ).where(UsageCounter.user_id == subject.id, UsageCounter.day == start)
                    )
                ).one_or_none()
                states.append(_state(subject, "d", start, counter, timezone, currency))
            elif _limited(subject.row, "day" if period == "d" else "month"):
                wanted.append((subject, period, start, Budget(SCOPES[subject.scope], subject.id, period).key(start)))
    if wanted:
        rows = await session.execute(
            select(
                BudgetCounter.key,
                BudgetCounter.messages,
                BudgetCounter.tokens,
                BudgetCounter.cost_nanos,
                BudgetCounter.reserved_tokens,
                BudgetCounter.reserved_cost,
            ).where(BudgetCounter.key.in_([key for *_, key in wanted]))
        )
        found = {row[0]: tuple(row[1:]) for row in rows}
        for subject, period, start, key in wanted:
            states.append(_state(subject, period, start, found.get(key, (0, 0, 0, 0, 0)), timezone, currency))
    return states


async def subjects_of_caller(
    session: AsyncSession, *, user_id: int, key_id: int | None, group_ids: tuple[int, ...]
) -> list[Subject]:
    """The user, their key (when they call with one) and their groups (the key's, when it is bound to one)."""
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"No user with id {user_id}.")
    subjects = [Subject("user", user.id, user.email, user)]
    if key_id is not None and (key := await session.get(ApiKey, key_id)) is not None:
        subjects.append(Subject("key", key.id, f"{key.name} ({key.prefix})", key))
    if group_ids:
        groups = (await session.execute(select(Group).where(Group.id.in_(group_ids)).order_by(Group.id))).scalars()
        subjects.extend(Subject("group", g.id, g.name, g) for g in groups)
    return subjects


async def subject(session: AsyncSession, scope: ScopeName, subject_id: int) -> Subject:
    row = await subject_or_raise(session, scope, subject_id)
    name = row.email if scope == "user" else row.name if scope == "group" else f"{row.name} ({row.prefix})"
    return Subject(scope, subject_id, name, row)


async def groups_of(session: AsyncSession, user_id: int) -> tuple[int, ...]:
    rows = await session.execute(select(GroupMember.group_id).where(GroupMember.user_id == user_id))
    return tuple(sorted(rows.scalars()))


__all__ = ["budget_states", "set_limits", "subject", "subjects_of_caller"]
