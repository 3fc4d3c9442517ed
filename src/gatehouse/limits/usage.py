"""Usage reports: what each user used on each quota day, against their quotas, and what it cost; and the repair for
a corrupted day."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import User
from gatehouse.errors import BadRequest
from gatehouse.limits.models import UsageCounter
from gatehouse.limits.quotas import resets_at
from gatehouse.limits.recovery import reconcile_counter

MAX_RANGE_DAYS = 366


@dataclass
class UsageRow:
    """One user's usage on one day, with their quotas."""

    user_id: int
    email: str
    day: date
    messages: int
    tokens: int
    reserved_tokens: int
    messages_per_day: int | None
    tokens_per_day: int | None
    spend_nanos: int = 0  # what the day's settled requests cost, in billionths of PRICE_CURRENCY
    unpriced_requests: int = 0  # the day's requests that used tokens of a model nothing prices (they cost 0)

    @property
    def messages_percent(self) -> float | None:
        return percent(self.messages, self.messages_per_day)

    @property
    def tokens_percent(self) -> float | None:
        return percent(self.tokens, self.tokens_per_day)


def percent(used: int, limit: int | None) -> float | None:
    """The share of a quota used, in percent (None: unlimited)."""
    if limit is None:
        return None
    return 100.0 if limit == 0 else round(100.0 * used / limit, 2)


def _usage_query(start: date, end: date, user_id: int | None) -> Any:
    query = (
        select(
            UsageCounter.user_id,
            User.email,
            UsageCounter.day,
            UsageCounter.messages,
            UsageCounter.tokens,
            UsageCounter.reserved_tokens,
            User.messages_per_day,
            User.tokens_per_day,
        )
        .join(User, User.id == UsageCounter.user_id)
        .where(UsageCounter.day >= start, UsageCounter.day <= end)
        .order_by(UsageCounter.day.desc(), UsageCounter.user_id)
    )
    return query.where(UsageCounter.user_id == user_id) if user_id is not None else query


async def list_usage(
    session: AsyncSession, *, start: date, end: date, user_id: int | None = None, limit: int = 10_000
) -> list[UsageRow]:
    """Usage per user per day in [start, end] (inclusive)."""
    rows = (await session.execute(_usage_query(start, end, user_id).limit(limit))).all()
    return [UsageRow(*row) for row in rows]


async def usage_for(session: AsyncSession, *, user_id: int, day: date) -> UsageRow:
    """One user's usage on one day (zeros when they made no request)."""
    rows = await list_usage(session, start=day, end=day, user_id=user_id)
    if rows:
        return rows[0]
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"No user with id {user_id}.")
    return UsageRow(
        user_id=user.id,
        email=user.email,
        day=day,
        messages=0,
        tokens=0,
        reserved_tokens=0,
        messages_per_day=user.messages_per_day,
        tokens_per_day=user.tokens_per_day,
    )


@dataclass(frozen=True)
class Spend:
    """What one user's requests cost over a time range, from the request log."""

    nanos: int = 0
    unpriced_requests: int = 0


# The request log's spend per user between two times, `[start, end)` (one user, or everyone): the gateway reads it
# (gateway/spend.py), and the composition root hands it over, as limits does not import the gateway.
SpendQuery = Callable[[AsyncSession, datetime, datetime, int | None], Awaitable[dict[int, Spend]]]


@dataclass(frozen=True)
class SpendReader:
    """The request log's spend per user, as provided to the routes (limits does not import the gateway)."""

    read: SpendQuery


def day_bounds(timezone: str, day: date) -> tuple[datetime, datetime]:
    """When a quota day starts and ends, in UTC."""
    return resets_at(timezone, day - timedelta(days=1)), resets_at(timezone, day)


async def with_spend(
    session: AsyncSession, rows: list[UsageRow], *, spend: SpendQuery, timezone: str, user_id: int | None = None
) -> list[UsageRow]:
    """The rows with what each user's requests of that day cost (one request-log query per day shown). Requests in
    flight are not in it yet: a request counts once it settled and its row was written (REQUEST_LOG_FLUSH_SECONDS)."""
    spent: dict[date, dict[int, Spend]] = {}
    for day in sorted({row.day for row in rows}):
        start, end = day_bounds(timezone, day)
        spent[day] = await spend(session, start, end, user_id)
    found = []
    for row in rows:
        cost = spent[row.day].get(row.user_id, Spend())
        found.append(replace(row, spend_nanos=cost.nanos, unpriced_requests=cost.unpriced_requests))
    return found


async def reset_usage(session: AsyncSession, *, day: date, user_id: int | None = None) -> int:
    """Zero the counters of a day (messages, tokens, spend; one user or everyone): the repair for a corrupted day.
    Returns rows reset.

    What requests in progress hold stays held (they settle against it), and holds that no reservation backs are
    dropped (limits/recovery.py `reconcile_counter`)."""
    statement = update(UsageCounter).where(UsageCounter.day == day)
    if user_id is not None:
        statement = statement.where(UsageCounter.user_id == user_id)
    result = await session.execute(statement.values(messages=0, tokens=0, cost_nanos=0).returning(UsageCounter.user_id))
    users = list(result.scalars())
    for user in users:
        await reconcile_counter(session, user, day)
    return len(users)


async def usage_between(session: AsyncSession, *, start: date, end: date, user_id: int | None = None) -> list[UsageRow]:
    """Usage per user per day from `start` to `end` (inclusive), at most MAX_RANGE_DAYS; 400 naming `to` else."""
    if end < start:
        raise BadRequest("`to` must not be before `from`.", param="to")
    if (end - start) > timedelta(days=MAX_RANGE_DAYS):
        raise BadRequest(f"Ask for at most {MAX_RANGE_DAYS} days at a time.", param="to")
    return await list_usage(session, start=start, end=end, user_id=user_id)


@dataclass(frozen=True)
class DayUsage:
    """One user's usage on one quota day (zeros on a day without requests)."""

    day: date
    messages: int
    tokens: int
    spend_nanos: int
    unpriced_requests: int


async def history(
    session: AsyncSession, *, user_id: int, start: date, end: date, spend: SpendQuery, timezone: str
) -> list[DayUsage]:
    """One user's usage per day from `start` to `end` (inclusive, oldest first, every day present), from the stored
    daily counters, with what each day's settled requests cost (the request log)."""
    found = {row.day: row for row in await usage_between(session, start=start, end=end, user_id=user_id)}
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    rows = [found.get(day) or UsageRow(user_id, "", day, 0, 0, 0, None, None) for day in days]
    rows = await with_spend(session, rows, spend=spend, timezone=timezone, user_id=user_id)
    return [DayUsage(r.day, r.messages, r.tokens, r.spend_nanos, r.unpriced_requests) for r in rows]
