"""Which budgets crossed a threshold, recording each crossing once, and reading the alerts back.

The usage of every budget with a limit in its current period is one query: the users' days (`usage_counter`)
and every other budget (`budget_counter`: a user's month, a group's or a key's day or month), each joined to its
subject's limits, filtered in the database to the budgets at or past the lowest threshold of at least one measure
(settled usage: what requests in flight hold is not counted until they settle). Most checks return no row.

A crossing is recorded by inserting its `budget_alert` row; the unique constraint on (budget, period, measure,
threshold) lets exactly one insert succeed whatever the number of replicas noticing it at once, and that
replica announces it. A limit of 0 (nothing allowed) raises no alert: there is no share of it to cross.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Float, String, and_, case, cast, func, literal_column, or_, select, tuple_, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from gatehouse.alerts.errors import WebhookNotConfigured
from gatehouse.alerts.events import AlertWebhookTestedEvent
from gatehouse.alerts.models import AlertDelivery, BudgetAlert
from gatehouse.alerts.webhook import Outcome, Webhook
from gatehouse.audit.service import record as audit
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import ApiKey, Group, User
from gatehouse.core.ids import new_id
from gatehouse.limits.budgets import MEASURES, PERIOD_NAMES, SCOPE_NAMES, Budget, column_of, period_end
from gatehouse.limits.models import BudgetCounter, UsageCounter
from gatehouse.limits.prices.money import decimal_of_nanos, json_number

EVENT = "budget.threshold"
TEST_EVENT = "alert.test"
# The database's prefilter compares in floating point, a hair below each threshold; the exact integer comparison
# below decides.
PREFILTER_MARGIN = 0.01
CROSSING_COLUMNS = ("scope", "subject_id", "period", "start", "measure", "threshold")
AlertKey = tuple[str, int, str, date, str, int]  # CROSSING_COLUMNS' values


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget at or past one threshold of one measure's limit, in its current period."""

    scope: str
    subject_id: int
    subject_name: str
    period: str
    start: date
    measure: str
    threshold: int
    used: int
    limit: int

    @property
    def key(self) -> AlertKey:
        return (self.scope, self.subject_id, self.period, self.start, self.measure, self.threshold)

    @property
    def budget(self) -> Budget:
        return Budget(self.scope, self.subject_id, self.period)  # type: ignore[arg-type]

    @property
    def event_id(self) -> str:
        """The alert's id for receivers: the same on every attempt, unique per budget, period, measure, threshold."""
        return f"{self.budget.key(self.start)}.{self.measure}.{self.threshold}"


def key_of(alert: BudgetAlert) -> AlertKey:
    return (alert.scope, alert.subject_id, alert.period, alert.start, alert.measure, alert.threshold)


# --- the query ---------------------------------------------------------------------------------------------------


def _usage(today: date, month: date) -> Any:
    """Every budget with a counter in its current period: scope, subject, period, start, name, what it used of
    each measure and the limit of each (None: none), as one UNION ALL."""
    users = User.email  # what operators name users by (display names need not be unique)
    days = select(
        literal_column("'u'", String).label("scope"),
        UsageCounter.user_id.label("subject_id"),
        literal_column("'d'", String).label("period"),
        UsageCounter.day.label("start"),
        users.label("name"),
        UsageCounter.messages.label("messages"),
        UsageCounter.tokens.label("tokens"),
        UsageCounter.cost_nanos.label("spend"),
        *(getattr(User, column_of(measure, "d")).label(f"{measure}_limit") for measure in MEASURES),
    ).join(User, User.id == UsageCounter.user_id)
    budgets = [_budgets(User, "u", users, today, month), _budgets(Group, "g", Group.name, today, month)]
    budgets.append(_budgets(ApiKey, "k", ApiKey.name, today, month))
    return union_all(days.where(UsageCounter.day == today), *budgets).subquery("usage")


def _budgets(model: Any, scope: str, name: Any, today: date, month: date) -> Select[Any]:
    counter = BudgetCounter
    daily = counter.period == "d"

    def limit(measure: str) -> Any:
        return case((daily, getattr(model, column_of(measure, "d"))), else_=getattr(model, column_of(measure, "m")))

    current = or_(and_(daily, counter.start == today), and_(counter.period == "m", counter.start == month))
    return (
        select(
            counter.scope,
            counter.subject_id,
            counter.period,
            counter.start,
            name.label("name"),
            counter.messages,
            counter.tokens,
            counter.cost_nanos.label("spend"),
            *(limit(measure).label(f"{measure}_limit") for measure in MEASURES),
        )
        .join(model, model.id == counter.subject_id)
        .where(counter.scope == scope, counter.start.in_(sorted({today, month})), current)
    )


def _at_least(usage: Any, measure: str, percent: float) -> Any:
    limit = usage.c[f"{measure}_limit"]
    return and_(limit > 0, cast(usage.c[measure], Float) * 100 >= cast(limit, Float) * (percent - PREFILTER_MARGIN))


async def near_limits(session: AsyncSession, *, today: date, month: date, lowest: int) -> Sequence[Any]:
    """The current budgets at or past `lowest` percent of at least one measure's limit."""
    usage = _usage(today, month)
    query = select(usage).where(or_(*(_at_least(usage, measure, lowest) for measure in MEASURES)))
    return (await session.execute(query)).all()


async def highest_percent(session: AsyncSession, *, today: date, month: date) -> dict[tuple[str, str], float]:
    """The highest share of its limit (percent) any current budget has used, by scope and measure."""
    usage = _usage(today, month)
    shares = [
        func.max(cast(usage.c[measure], Float) * 100 / func.nullif(usage.c[f"{measure}_limit"], 0))
        for measure in MEASURES
    ]
    found: dict[tuple[str, str], float] = {}
    for scope, *values in (await session.execute(select(usage.c.scope, *shares).group_by(usage.c.scope))).all():
        for measure, value in zip(MEASURES, values, strict=True):
            if value is not None:
                found[(scope, measure)] = float(value)
    return found


def crossings(rows: Iterable[Any], thresholds: Sequence[int]) -> Iterator[Crossing]:
    """Every threshold each budget has reached, measure by measure (exact integer comparisons)."""
    for row in rows:
        for measure in MEASURES:
            limit = getattr(row, f"{measure}_limit")
            used = int(getattr(row, measure) or 0)
            if limit is None or limit <= 0:
                continue
            for threshold in thresholds:
                if used * 100 >= threshold * limit:
                    yield Crossing(
                        scope=row.scope,
                        subject_id=row.subject_id,
                        subject_name=row.name or "",
                        period=row.period,
                        start=row.start,
                        measure=measure,
                        threshold=threshold,
                        used=used,
                        limit=int(limit),
                    )


# --- recording ---------------------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def amount(measure: str, value: int) -> int | float:
    """A count as it is; spend in PRICE_CURRENCY (from billionths)."""
    return json_number(decimal_of_nanos(value)) if measure == "spend" else value


def payload_of(crossing: Crossing, *, at: datetime, timezone: str, currency: str) -> bytes:
    """The webhook body of a crossing (docs: RUNBOOK "Budget alerts")."""
    budget = crossing.budget
    body = {
        "id": crossing.event_id,
        "type": EVENT,
        "created_at": _iso(at),
        "budget": {
            "key": budget.key(crossing.start),
            "scope": SCOPE_NAMES[crossing.scope],
            "subject_id": crossing.subject_id,
            "subject_name": crossing.subject_name,
            "period": PERIOD_NAMES[crossing.period],
            "start": crossing.start.isoformat(),
            "resets_at": _iso(period_end(timezone, crossing.period, crossing.start)),
            "timezone": timezone,
        },
        "measure": crossing.measure,
        "threshold": crossing.threshold,
        "used": amount(crossing.measure, crossing.used),
        "limit": amount(crossing.measure, crossing.limit),
        "percent": round(crossing.used * 100 / crossing.limit, 2),
        "currency": currency if crossing.measure == "spend" else None,
    }
    return orjson.dumps(body)


async def recorded(session: AsyncSession, found: Sequence[Crossing]) -> set[AlertKey]:
    """Which of these crossings already have their alert."""
    if not found:
        return set()
    budgets = {(c.scope, c.subject_id, c.period, c.start) for c in found}
    columns = [getattr(BudgetAlert, name) for name in CROSSING_COLUMNS]
    query = select(*columns).where(
        tuple_(BudgetAlert.scope, BudgetAlert.subject_id, BudgetAlert.period, BudgetAlert.start).in_(sorted(budgets))
    )
    return {tuple(row) for row in (await session.execute(query)).all()}


async def record(
    session: AsyncSession,
    crossing: Crossing,
    *,
    at: datetime,
    replica: str,
    payload: bytes,
    target: str | None,
    lease: timedelta,
) -> tuple[BudgetAlert, AlertDelivery | None] | None:
    """Record the crossing's alert, and its delivery when a webhook is set (held by `replica`, which sends it);
    None when another replica (or an earlier check) recorded it first."""
    values = {name: getattr(crossing, name) for name in CROSSING_COLUMNS}
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(BudgetAlert)
        .values(
            **values,
            used=crossing.used,
            limit=crossing.limit,
            subject_name=crossing.subject_name[:320],
            replica=replica,
            created_at=at,
            payload=payload.decode(),
        )
        .on_conflict_do_nothing(index_elements=list(CROSSING_COLUMNS))
        .returning(BudgetAlert.id)
    )
    alert_id = (await session.execute(statement)).scalar_one_or_none()
    if alert_id is None:
        return None
    alert = await session.get_one(BudgetAlert, alert_id)
    delivery = None
    if target is not None:
        delivery = AlertDelivery(
            alert_id=alert_id,
            target=target,
            status="pending",
            attempts=0,
            created_at=at,
            next_attempt_at=at,
            claimed_by=replica,
            lease_until=at + lease,
        )
        session.add(delivery)
        await session.flush()
    return alert, delivery


# --- reading -----------------------------------------------------------------------------------------------------


async def list_alerts(
    session: AsyncSession, *, before_id: int | None, limit: int, delivery: str | None = None
) -> list[tuple[BudgetAlert, list[AlertDelivery]]]:
    """Alerts, newest first, each with its deliveries; `delivery` keeps those with a delivery in that status."""
    query = select(BudgetAlert).order_by(BudgetAlert.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(BudgetAlert.id < before_id)
    if delivery is not None:
        having = select(AlertDelivery.alert_id).where(AlertDelivery.status == delivery)
        query = query.where(BudgetAlert.id.in_(having))
    alerts = list((await session.execute(query)).scalars())
    by_alert: dict[int, list[AlertDelivery]] = {alert.id: [] for alert in alerts}
    if alerts:
        rows = await session.execute(
            select(AlertDelivery).where(AlertDelivery.alert_id.in_(by_alert)).order_by(AlertDelivery.id)
        )
        for row in rows.scalars():
            by_alert[row.alert_id].append(row)
    return [(alert, by_alert[alert.id]) for alert in alerts]


# --- the test webhook --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentTest:
    """A test webhook's id, where it went and what came of it."""

    event_id: str
    target: str
    outcome: Outcome


async def send_test(session: AsyncSession, *, webhook: Webhook | None, actor: Actor, at: datetime) -> SentTest:
    """Send one test event to the webhook (one attempt: the answer is what an operator wants), audited."""
    if webhook is None:
        raise WebhookNotConfigured(
            "ALERT_WEBHOOK_URL is not set here: set it and ALERT_WEBHOOK_SECRET (the same on every replica), "
            "restart, and send the test again."
        )
    event_id = f"test-{new_id(16)}"
    body = {
        "id": event_id,
        "type": TEST_EVENT,
        "created_at": _iso(at),
        "message": "A test of Gatehouse's alert webhook: check its signature, then ignore it.",
    }
    outcome = await webhook.send(orjson.dumps(body), event=TEST_EVENT)
    event = AlertWebhookTestedEvent(
        webhook=webhook.target,
        event_id=event_id,
        delivered=outcome.delivered,
        status_code=outcome.status,
        error=outcome.error,
    )
    await audit(session, event, actor=actor)
    return SentTest(event_id, webhook.target, outcome)
