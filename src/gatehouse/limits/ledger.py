"""Reserving and settling a request against several counters at once: the user's day (`usage_counter`) and its
other budgets (`budget_counter`: the user's month, its key's and groups' days and months), in messages, tokens and
money. limits/quotas.py uses this whenever a request counts against more than the user's day, or against a spend
limit; a request under the user's daily quotas alone keeps its single statement.

One transaction: the counters are created if missing, then locked in key order (PostgreSQL: SELECT ... FOR UPDATE;
SQLite: the transaction's write lock), so concurrent requests on any replica queue on the rows they share and never
deadlock; each counter's limits are read from its subject's row in the same transaction, so a changed limit
applies at once. The request is admitted when it fits every counter, with one grant for all of them:

- messages: `messages + 1 <= limit` on each counter with a message limit;
- tokens: the target is the least of what it wants and each token limit's remainder (`limit - used`);
- money: with a price, each spend limit's remainder bounds the target too: the most tokens whose worst cost (the
  prompt bound at the input price, the rest at the output price) fits it;
- the target must cover `need` (the prompt bound and one token), else the budget is used up (`quota_exceeded`,
  naming it); it must also fit beside what other requests hold on every counter, else the request waits
  (`quota_busy` once QUOTA_WAIT_SECONDS have passed).

The grant and its worst cost are held on every counter (identical deltas: one UPDATE per table), and released at
settlement, when the actual tokens and cost are added, again to every counter: a request's settlement moves each of
its budgets by the same amounts, so reports of any of them add up.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Table, bindparam, case, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gatehouse.auth.models import ApiKey, Group, User
from gatehouse.limits.budgets import PERIOD_NAMES, SCOPE_NAMES, Budget, column_of, parse_key
from gatehouse.limits.models import BudgetCounter, QuotaReservation, UsageCounter
from gatehouse.limits.prices.table import Price, cost_nanos

_uc: Table = UsageCounter.__table__  # type: ignore[assignment]
_bc: Table = BudgetCounter.__table__  # type: ignore[assignment]
_res: Table = QuotaReservation.__table__  # type: ignore[assignment]
SUBJECTS: dict[str, Any] = {"u": User, "g": Group, "k": ApiKey}


@dataclass(slots=True)
class Limits:
    messages: int | None
    tokens: int | None
    spend: int | None

    @property
    def any(self) -> bool:
        return self.messages is not None or self.tokens is not None or self.spend is not None


@dataclass(slots=True)
class Counter:
    """One counter as locked: its usage, its holds and its subject's limits for its period."""

    name: str  # "your day", "group 3's month"...
    measure_period: str  # "day" or "month"
    messages: int
    tokens: int
    cost: int
    reserved_tokens: int
    reserved_cost: int
    limits: Limits
    budget: Budget | None = None  # None: the user's day
    start: date | None = None


@dataclass(slots=True)
class Refusal:
    """Why a request does not fit: used up (`exceeded`) or held by others (`busy`)."""

    exceeded: bool
    measure: str  # messages, tokens or spend
    counter: Counter
    need: int = 0
    detail: str = ""


@dataclass(slots=True)
class Outcome:
    """What the attempt found: the reservation's grant and cost when admitted, else the refusal."""

    grant: int = 0
    cost: int = 0
    refusal: Refusal | None = None
    counters: list[Counter] = field(default_factory=list)


def worst_cost(price: Price | None, prompt_bound: int, grant: int) -> int:
    """The most a grant of `grant` tokens (of which `prompt_bound` the prompt) can cost."""
    if price is None:
        return 0
    dearest = max(price.input_micros, price.cached_input_micros)  # a prompt read from a cache may cost more
    return cost_nanos(Price(dearest, price.output_micros, dearest), prompt_bound, 0, max(grant - prompt_bound, 0))


def money_target(price: Price | None, prompt_bound: int, remaining: int) -> int | None:
    """The most tokens whose worst cost fits `remaining` billionths (None: money does not bound them)."""
    if price is None:
        return None
    budget = remaining * 1000  # in millionths per million tokens: the prices' unit
    prompt_cost = prompt_bound * max(price.input_micros, price.cached_input_micros)
    if prompt_cost > budget:
        return -1  # not even the prompt
    if price.output_micros == 0:
        return None
    return prompt_bound + (budget - prompt_cost) // price.output_micros


def decide(
    counters: list[Counter], *, messages: int, need: int, want: int, prompt_bound: int, price: Price | None
) -> Outcome:
    """The grant that fits every counter, or why none does (pure: see the module docstring)."""
    target = want
    bounded = False
    binding: tuple[str, Counter] | None = None
    for counter in counters:
        limits = counter.limits
        if limits.messages is not None and counter.messages + messages > limits.messages:
            return Outcome(refusal=Refusal(True, "messages", counter))
        if limits.tokens is not None:
            bounded = True
            left = limits.tokens - counter.tokens
            if left < target:
                target, binding = left, ("tokens", counter)
        if limits.spend is not None:
            by_money = money_target(price, prompt_bound, limits.spend - counter.cost)
            if by_money is not None:
                bounded = True
                if by_money < target:
                    target, binding = by_money, ("spend", counter)
    if target < need:
        measure, counter = binding or ("tokens", counters[0])
        return Outcome(refusal=Refusal(True, measure, counter, need=need))
    grant = target if bounded else 0
    cost = worst_cost(price, prompt_bound, grant) if grant else 0
    for counter in counters:
        limits = counter.limits
        if limits.tokens is not None and limits.tokens - counter.tokens - counter.reserved_tokens < grant:
            return Outcome(refusal=Refusal(False, "tokens", counter, need=grant))
        if (
            limits.spend is not None
            and price is not None
            and limits.spend - counter.cost - counter.reserved_cost < cost
        ):
            return Outcome(refusal=Refusal(False, "spend", counter, need=cost))
    return Outcome(grant=grant, cost=cost, counters=counters)


# --- the transaction ---------------------------------------------------------------------------------


async def _ensure(
    conn: AsyncConnection, pg: bool, user_id: int, day: date, keys: dict[str, tuple[Budget, date]]
) -> None:
    builder = pg_insert if pg else sqlite_insert
    now = datetime.now(UTC)
    zeros = {"messages": 0, "tokens": 0, "cost_nanos": 0, "reserved_tokens": 0, "reserved_cost": 0, "updated_at": now}
    await conn.execute(
        builder(_uc)
        .values(user_id=user_id, day=day, last_grant=0, **zeros)
        .on_conflict_do_nothing(index_elements=["user_id", "day"])
    )
    if keys:
        rows = [
            {"key": key, "scope": b.scope, "subject_id": b.subject_id, "period": b.period, "start": start, **zeros}
            for key, (b, start) in sorted(keys.items())
        ]
        await conn.execute(builder(_bc).values(rows).on_conflict_do_nothing(index_elements=["key"]))


async def _limits(conn: AsyncConnection, user_id: int, budgets: list[Budget]) -> dict[tuple[str, int, str], Limits]:
    """The limits of the user's day and of each budget, from their subjects' rows."""
    wanted: dict[str, set[int]] = {"u": {user_id}}
    for budget in budgets:
        wanted.setdefault(budget.scope, set()).add(budget.subject_id)
    found: dict[tuple[str, int, str], Limits] = {}
    for scope, ids in wanted.items():
        model = SUBJECTS[scope]
        columns = [getattr(model, column_of(m, p)) for p in ("d", "m") for m in ("messages", "tokens", "spend")]
        for row in (await conn.execute(select(model.id, *columns).where(model.id.in_(ids)))).all():
            found[(scope, row[0], "d")] = Limits(row[1], row[2], row[3])
            found[(scope, row[0], "m")] = Limits(row[4], row[5], row[6])
    return found


async def lock_counters(
    conn: AsyncConnection, *, pg: bool, user_id: int, day: date, keys: dict[str, tuple[Budget, date]]
) -> list[Counter] | None:
    """Create the missing counters, lock them all (key order) and read them with their limits; None when the user
    no longer exists."""
    await _ensure(conn, pg, user_id, day, keys)
    user_row = select(_uc.c.messages, _uc.c.tokens, _uc.c.cost_nanos, _uc.c.reserved_tokens, _uc.c.reserved_cost).where(
        _uc.c.user_id == user_id, _uc.c.day == day
    )
    budget_rows = (
        select(_bc.c.key, _bc.c.messages, _bc.c.tokens, _bc.c.cost_nanos, _bc.c.reserved_tokens, _bc.c.reserved_cost)
        .where(_bc.c.key.in_(sorted(keys)))
        .order_by(_bc.c.key)
    )
    if pg:
        user_row, budget_rows = user_row.with_for_update(), budget_rows.with_for_update()
    mine = (await conn.execute(user_row)).one()
    others = {row[0]: row[1:] for row in (await conn.execute(budget_rows)).all()} if keys else {}
    limits = await _limits(conn, user_id, [b for b, _ in keys.values()])
    own = limits.get(("u", user_id, "d"))
    if own is None:
        return None
    counters = [Counter("your day", "day", *mine, limits=own)]
    for key, (budget, start) in sorted(keys.items()):
        found = limits.get((budget.scope, budget.subject_id, budget.period))
        if found is None:  # the group or key is gone since the registry loaded: nothing to count against
            continue
        name = (
            f"your {PERIOD_NAMES[budget.period]}"
            if budget.scope == "u"
            else f"{SCOPE_NAMES[budget.scope]} {budget.subject_id}'s {PERIOD_NAMES[budget.period]}"
        )
        counters.append(
            Counter(name, PERIOD_NAMES[budget.period], *others[key], limits=found, budget=budget, start=start)
        )
    return counters


_HOLD = {
    table: update(table)
    .where(where)
    .values(
        messages=table.c.messages + bindparam("h_messages"),
        reserved_tokens=table.c.reserved_tokens + bindparam("h_grant"),
        reserved_cost=table.c.reserved_cost + bindparam("h_cost"),
        updated_at=bindparam("h_now"),
    )
    for table, where in (
        (_uc, (_uc.c.user_id == bindparam("h_user")) & (_uc.c.day == bindparam("h_day"))),
        (_bc, _bc.c.key.in_(bindparam("h_keys", expanding=True))),
    )
}


async def hold(
    conn: AsyncConnection,
    *,
    replica: str,
    user_id: int,
    day: date,
    keys: list[str],
    messages: int,
    outcome: Outcome,
    prompt_estimate: int,
    price: Price | None,
) -> int:
    """Hold the grant and its cost on every counter and write the reservation's row; its id."""
    now = datetime.now(UTC)
    params = {
        "h_messages": messages,
        "h_grant": outcome.grant,
        "h_cost": outcome.cost,
        "h_now": now,
        "h_user": user_id,
        "h_day": day,
        "h_keys": keys,
    }
    await conn.execute(_HOLD[_uc], params)
    if keys:
        await conn.execute(_HOLD[_bc], params)
    reservation_id = secrets.randbits(63)
    await conn.execute(
        insert(_res).values(
            id=reservation_id,
            user_id=user_id,
            day=day,
            replica=replica,
            messages=messages,
            granted=outcome.grant,
            prompt_tokens=prompt_estimate,
            completion_tokens=0,
            created_at=now,
            cost=outcome.cost,
            budgets=",".join(keys),
            input_micros=price.input_micros if price is not None else None,
            output_micros=price.output_micros if price is not None else None,
        )
    )
    return reservation_id


def _released(table: Table, *, refund: bool) -> dict[str, Any]:
    tokens_left = table.c.reserved_tokens - bindparam("s_granted")
    cost_left = table.c.reserved_cost - bindparam("s_held")
    values: dict[str, Any] = {
        "tokens": table.c.tokens + bindparam("s_tokens"),
        "cost_nanos": table.c.cost_nanos + bindparam("s_cost"),
        "reserved_tokens": case((tokens_left < 0, 0), else_=tokens_left),
        "reserved_cost": case((cost_left < 0, 0), else_=cost_left),
        "updated_at": bindparam("s_now"),
    }
    if refund:
        messages: Any = bindparam("s_messages")
        values["messages"] = case((table.c.messages >= messages, table.c.messages - messages), else_=0)
    return values


_SETTLE = {
    (table, refund): update(table).where(where).values(**_released(table, refund=refund))
    for table, where in (
        (_uc, (_uc.c.user_id == bindparam("s_user")) & (_uc.c.day == bindparam("s_day"))),
        (_bc, _bc.c.key.in_(bindparam("s_keys", expanding=True))),
    )
    for refund in (False, True)
}


async def settle(
    conn: AsyncConnection, *, reservation_id: int, tokens: int, cost: int, refund: bool
) -> tuple[int, int] | None:
    """Remove the reservation and apply its usage to each of its counters, once: (user id, grant) when it was still
    there, None when another replica recovered it (or it was settled already)."""
    row = (
        await conn.execute(
            delete(_res)
            .where(_res.c.id == reservation_id)
            .returning(_res.c.user_id, _res.c.day, _res.c.granted, _res.c.cost, _res.c.messages, _res.c.budgets)
        )
    ).one_or_none()
    if row is None:
        return None
    user_id, day, granted, held, messages, budgets = row
    await apply(
        conn,
        user_id=user_id,
        day=day,
        budgets=budgets,
        granted=granted,
        held=held,
        messages=messages,
        tokens=tokens,
        cost=cost,
        refund=refund,
    )
    return user_id, granted


async def apply(
    conn: AsyncConnection | AsyncSession,
    *,
    user_id: int,
    day: date,
    budgets: str,
    granted: int,
    held: int,
    messages: int,
    tokens: int,
    cost: int,
    refund: bool,
) -> None:
    """Release a reservation's holds and add its usage on the user's day and on each of its budget counters."""
    params = {
        "s_user": user_id,
        "s_day": day,
        "s_keys": [key for key in budgets.split(",") if key],
        "s_granted": granted,
        "s_held": held,
        "s_messages": messages,
        "s_tokens": tokens,
        "s_cost": cost,
        "s_now": datetime.now(UTC),
    }
    await conn.execute(_SETTLE[(_uc, refund and bool(messages))], params)
    if params["s_keys"]:
        await conn.execute(_SETTLE[(_bc, refund and bool(messages))], params)


def recovered_cost(row: Any, charged: int) -> int:
    """What a recovered reservation's request is counted as having cost: its charged tokens at its reservation's
    price (the prompt first, at the input price), never more than it held."""
    if row.input_micros is None or row.output_micros is None:
        return 0
    price = Price(int(row.input_micros), int(row.output_micros), int(row.input_micros))
    prompt = min(int(row.prompt_tokens), charged)
    cost = cost_nanos(price, prompt, 0, charged - prompt)
    return min(cost, int(row.cost)) if row.cost else cost


def keys_of(budgets: str) -> list[tuple[Budget, date]]:
    return [parse_key(key) for key in budgets.split(",") if key]
