"""Budgets: the limits of every subject (a user, a group, a key) and period (a day, a month), and which of them a
request counts against.

Every request counts against its user's day (the `usage_counter` row, as it always has: it carries the user's
daily quotas and daily spend limit). It also counts against a `budget_counter` row for each other budget that has
a limit: the user's month, and the day and month of the key and of each of the caller's groups (the key's group
when the key is bound to one, else every group of the user). Budgets without any limit have no counter: what
they used is in the request log (reports), and the request does not pay for them.

Which budgets have a limit is kept in memory on every replica (`BudgetRegistry`), reloaded on the bus's
BUDGETS_CHANGED signal and, whenever signals cannot reach it (Redis down, or no Redis and a change made by the CLI
in another process), every RELOAD_SECONDS: a budget newly given a limit counts
on every replica within a second. The limits' values are read by the reservation itself, in its transaction, so a
changed value applies to the next request everywhere.

Periods follow QUOTA_TIMEZONE: a day starts at its midnight, a month on its first day's midnight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.auth.models import ApiKey, Group, User
from gatehouse.core.bus import Signal
from gatehouse.core.logging import get_logger
from gatehouse.core.tasks import every, logged, stop

log = get_logger("gatehouse.quotas")
RELOAD_SECONDS = 1.0
Scope = Literal["u", "g", "k"]
Period = Literal["d", "m"]
SCOPE_NAMES = {"u": "user", "g": "group", "k": "key"}
PERIOD_NAMES = {"d": "day", "m": "month"}
# The limit columns of each period, as every subject table names them.
MEASURES = ("messages", "tokens", "spend")


def column_of(measure: str, period: str) -> str:
    """The column of a subject table holding this measure's limit for this period."""
    per = PERIOD_NAMES[period]
    return f"spend_per_{per}_nanos" if measure == "spend" else f"{measure}_per_{per}"


@dataclass(frozen=True, slots=True, order=True)
class Budget:
    """One subject's budget of one period (its counter's key needs the period's start too)."""

    scope: Scope
    subject_id: int
    period: Period

    def key(self, start: date) -> str:
        return f"{self.scope}{self.subject_id}{self.period}{start:%Y%m%d}"

    def describe(self) -> str:
        return f"{SCOPE_NAMES[self.scope]} {self.subject_id}'s {PERIOD_NAMES[self.period]}"


def parse_key(key: str) -> tuple[Budget, date]:
    """A counter's key back into its budget and period start (`g3m20261201`)."""
    scope, rest = key[0], key[1:]
    start = datetime.strptime(rest[-8:], "%Y%m%d").date()
    period = rest[-9]
    if scope not in SCOPE_NAMES or period not in PERIOD_NAMES:
        raise ValueError(f"not a budget counter key: {key!r}")
    return Budget(scope, int(rest[:-9]), period), start  # type: ignore[arg-type]


def period_start(timezone: str, period: str, now: datetime | None = None) -> date:
    """The first day of the current day or month in QUOTA_TIMEZONE."""
    today = (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone)).date()
    return today if period == "d" else today.replace(day=1)


def period_end(timezone: str, period: str, start: date) -> datetime:
    """When the period that began on `start` ends (in UTC): the next midnight, or the next month's first."""
    if period == "d":
        following = start + timedelta(days=1)
    else:
        following = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime.combine(following, time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def _limited(model: Any, period: str) -> Any:
    return or_(*(getattr(model, column_of(measure, period)).is_not(None) for measure in MEASURES))


class BudgetRegistry:
    """Which budgets have a limit (see the module docstring)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession] | None) -> None:
        self.sessionmaker = sessionmaker
        self._users_month: frozenset[int] = frozenset()
        self._users_day_spend: frozenset[int] = frozenset()
        self._groups: dict[int, tuple[Period, ...]] = {}
        self._keys: dict[int, tuple[Period, ...]] = {}
        # Whether bus signals reach this replica (Redis configured and up): else changes made elsewhere (another
        # replica while Redis is down, the CLI without Redis) are picked up by reading again every RELOAD_SECONDS.
        self.signals_reach_us: Callable[[], bool] = lambda: False
        self._task: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()
        self.loaded = 0

    def budgets_of(self, user_id: int, key_id: int | None, group_ids: tuple[int, ...]) -> tuple[Budget, ...]:
        """The budgets beside the user's day that a request of this caller counts against, in lock order."""
        found: list[Budget] = []
        if user_id in self._users_month:
            found.append(Budget("u", user_id, "m"))
        if key_id is not None:
            found.extend(Budget("k", key_id, period) for period in self._keys.get(key_id, ()))
        for group_id in group_ids:
            found.extend(Budget("g", group_id, period) for period in self._groups.get(group_id, ()))
        return tuple(sorted(found)) if len(found) > 1 else tuple(found)

    def user_day_spend(self, user_id: int) -> bool:
        """Whether the user's day has a spend limit (its reservation must then hold the request's worst cost)."""
        return user_id in self._users_day_spend

    @property
    def empty(self) -> bool:
        return not (self._users_month or self._users_day_spend or self._groups or self._keys)

    # --- loading -----------------------------------------------------------------------------------

    async def reload(self) -> None:
        if self.sessionmaker is None:
            return
        async with self._reloading, self.sessionmaker() as session:
            users_month = (await session.execute(select(User.id).where(_limited(User, "m")))).scalars().all()
            day_spend = (
                (await session.execute(select(User.id).where(User.spend_per_day_nanos.is_not(None)))).scalars().all()
            )
            groups = await _periods(session, Group)
            keys = await _periods(session, ApiKey, ApiKey.revoked_at.is_(None))
        self._users_month = frozenset(users_month)
        self._users_day_spend = frozenset(day_spend)
        self._groups, self._keys = groups, keys
        self.loaded += 1

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(
            every(RELOAD_SECONDS, self._reload_unless_signalled, log=log, event="budgets_reload_failed"),
            name="gatehouse-budgets-reload",
        )

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _reload_unless_signalled(self) -> None:
        # A failure (the database away too) leaves what is in memory standing; the next round retries.
        if not self.signals_reach_us():
            await self.reload()

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: a change somewhere (or signals that may have been missed)."""
        if kind in (Signal.BUDGETS_CHANGED, Signal.RECONNECTED):
            await logged(self.reload, log=log, event="budgets_reload_failed")


async def _periods(session: AsyncSession, model: Any, *where: Any) -> dict[int, tuple[Period, ...]]:
    found: dict[int, list[Period]] = {}
    for period in ("d", "m"):
        query = select(model.id).where(_limited(model, period), *where)
        for subject_id in (await session.execute(query)).scalars():
            found.setdefault(subject_id, []).append(period)
    return {subject: tuple(periods) for subject, periods in found.items()}
