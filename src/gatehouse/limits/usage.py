"""Usage reports: what each user used on each quota day, against their quotas; and the repair for a corrupted day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.models import User
from gatehouse.errors import BadRequest
from gatehouse.limits.models import UsageCounter
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


async def reset_usage(session: AsyncSession, *, day: date, user_id: int | None = None) -> int:
    """Zero the counters of a day (one user or everyone): the repair for a corrupted day. Returns rows reset.

    What requests in progress hold stays held (they settle against it), and holds that no reservation backs are
    dropped (limits/recovery.py `reconcile_counter`)."""
    statement = update(UsageCounter).where(UsageCounter.day == day)
    if user_id is not None:
        statement = statement.where(UsageCounter.user_id == user_id)
    result = await session.execute(statement.values(messages=0, tokens=0).returning(UsageCounter.user_id))
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
