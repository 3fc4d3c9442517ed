"""Recovering the quota reservations of a replica that died with requests in flight, and repairing holds that no
reservation backs.

Every replica checks, at its start and then every heartbeat interval, whether the reservations in
`quota_reservation` belong to a replica that is gone: its heartbeat is stale (STALE_BEATS intervals, judged by the
database's clock), it ran on this host and its pid no longer runs (a process restarted in place knows at once), or
it has no heartbeat row and wrote nothing for as long. It then settles them in one transaction (DELETE ...
RETURNING the rows, the counters updated from them, an audit event): on PostgreSQL a second replica doing the same
finds the rows already gone, and the dead replica's own settlement, should it come back, finds nothing to settle
either (limits/quotas.py), so each reservation is settled exactly once.

What a recovered request is counted as having used: its last checkpoint (the prompt, and the completion tokens
relayed so far; its replica writes every moving reservation's progress every QUOTA_CHECKPOINT_SECONDS), plus what
it could have produced after its replica's last checkpoint batch, at the rate it was producing, for one
checkpoint interval (the replica would have written again had it lived longer), never more than its grant. All
these times come from the dead replica's own clock, so they agree with each other. At a steady rate the count is
high by at most one checkpoint interval's worth of that request's tokens (50 for a stream of 25 tokens a second at
the default 2 s); it is low only by what a request produced beyond its former rate in that last interval, and for a
request not streamed, whose answer is never relayed piecewise, by its answer (it is charged its prompt). It never
exceeds the grant, so the quota is never passed.

A counter whose `reserved_tokens` differs from the grants of its reservations (left by a release that kept no
reservation rows, by a counter reset, by a settlement that failed for good) is set to the sum of those grants, under
the counter's lock so no reservation in progress is missed, and audited as `quota.holds_reconciled`.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from time import monotonic
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import QUOTA_RECOVERED
from gatehouse.core.tasks import every, logged
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import UTCDateTime, utcnow
from gatehouse.jobs.models import ReplicaBeat
from gatehouse.jobs.replicas import HEARTBEAT_SECONDS, STALE_BEATS, database_now, is_live, known_dead
from gatehouse.limits import ledger
from gatehouse.limits.events import QuotaHoldsReconciledEvent, QuotaReservationsRecoveredEvent
from gatehouse.limits.models import BudgetCounter, QuotaReservation, UsageCounter

log = get_logger("gatehouse.quotas")
ACTOR = Actor.system("quota-recovery")
RECONCILE_SECONDS = 60.0  # how often the holds are compared with the reservations
RECONCILE_DAYS = 2  # counters of this many past days (and today) are compared


def charged_tokens(row: Any, *, last_batch: datetime | None, checkpoint_seconds: float) -> int:
    """What a recovered reservation's request is counted as having used (see the module docstring): `last_batch` is
    its replica's newest checkpoint (a row not rewritten then had not moved since its own)."""
    completion = int(row.completion_tokens)
    extra = 0.0
    if row.checkpoint_at is not None and completion:
        elapsed = (row.checkpoint_at - row.created_at).total_seconds()
        if elapsed > 0:
            since = max(row.checkpoint_at, last_batch or row.checkpoint_at)
            until = since + timedelta(seconds=checkpoint_seconds)
            extra = completion / elapsed * (until - since).total_seconds()
    used = int(row.prompt_tokens) + completion + math.ceil(extra)
    return min(used, int(row.granted)) if row.granted else used


@dataclass(frozen=True, slots=True)
class DeadReplica:
    """A replica found gone, holding reservations."""

    replica: str
    reason: str  # "heartbeat stale", "process gone", "no heartbeat"


@dataclass(frozen=True, slots=True)
class Recovered:
    """One dead replica's reservations, settled."""

    replica: str
    reason: str
    reservations: int
    users: list[int]
    tokens_released: int
    tokens_charged: int


async def dead_holders(session: AsyncSession, *, me: str) -> list[DeadReplica]:
    """The replicas other than `me` that hold reservations and are gone."""
    rows = await session.execute(
        select(
            QuotaReservation.replica,
            func.max(func.coalesce(QuotaReservation.checkpoint_at, QuotaReservation.created_at), type_=UTCDateTime()),
        )
        .where(QuotaReservation.replica != me)
        .group_by(QuotaReservation.replica)
    )
    holders: dict[str, datetime] = {replica: written for replica, written in rows}
    if not holders:
        return []
    now = await database_now(session)
    beats = {
        row.id: row for row in (await session.execute(select(ReplicaBeat).where(ReplicaBeat.id.in_(holders)))).scalars()
    }
    dead: list[DeadReplica] = []
    for replica, written in sorted(holders.items()):
        beat = beats.get(replica)
        if beat is None:
            # A replica serves only once its heartbeat is written; without one, it is gone (or its first beats
            # failed): only once it has written nothing for as long as a heartbeat takes to go stale.
            if written < now - timedelta(seconds=STALE_BEATS * HEARTBEAT_SECONDS):
                dead.append(DeadReplica(replica, "no heartbeat"))
        elif known_dead(beat, me=me):
            dead.append(DeadReplica(replica, "process gone"))
        elif not is_live(beat, now):
            dead.append(DeadReplica(replica, "heartbeat stale"))
    return dead


async def recover_replica(
    session: AsyncSession,
    dead: DeadReplica,
    *,
    checkpoint_seconds: float,
    feed: EventFeed | None = None,
) -> Recovered | None:
    """Settle a dead replica's reservations in the session's transaction; None when another replica did first."""
    taken = (
        await session.execute(
            delete(QuotaReservation)
            .where(QuotaReservation.replica == dead.replica)
            .returning(
                QuotaReservation.user_id,
                QuotaReservation.day,
                QuotaReservation.granted,
                QuotaReservation.prompt_tokens,
                QuotaReservation.completion_tokens,
                QuotaReservation.created_at,
                QuotaReservation.checkpoint_at,
                QuotaReservation.messages,
                QuotaReservation.cost,
                QuotaReservation.budgets,
                QuotaReservation.input_micros,
                QuotaReservation.output_micros,
            )
        )
    ).all()
    if not taken:
        return None
    last_batch = max((row.checkpoint_at for row in taken if row.checkpoint_at is not None), default=None)
    counters: dict[tuple[int, date], list[int]] = defaultdict(lambda: [0, 0])
    # In a stable order (user, day, budgets), so two recoveries cannot lock the same counters in different orders.
    for row in sorted(taken, key=lambda r: (r.user_id, r.day, r.budgets)):
        charged = charged_tokens(row, last_batch=last_batch, checkpoint_seconds=checkpoint_seconds)
        totals = counters[(row.user_id, row.day)]
        totals[0] += row.granted
        totals[1] += charged
        await ledger.apply(
            session,
            user_id=row.user_id,
            day=row.day,
            budgets=row.budgets or "",
            granted=row.granted,
            held=row.cost or 0,
            messages=row.messages,
            tokens=charged,
            cost=ledger.recovered_cost(row, charged),
            refund=False,
        )
    recovered = Recovered(
        replica=dead.replica,
        reason=dead.reason,
        reservations=len(taken),
        users=sorted({user_id for user_id, _ in counters}),
        tokens_released=sum(granted for granted, _ in counters.values()),
        tokens_charged=sum(charged for _, charged in counters.values()),
    )
    await record(
        session,
        QuotaReservationsRecoveredEvent(
            replica=dead.replica,
            reason=dead.reason,
            reservations=recovered.reservations,
            users=recovered.users,
            tokens_released=recovered.tokens_released,
            tokens_charged=recovered.tokens_charged,
        ),
        actor=ACTOR,
        feed=feed,
    )
    return recovered


async def recover(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    me: str,
    checkpoint_seconds: float,
    feed: EventFeed | None = None,
) -> list[Recovered]:
    """Settle the reservations of every dead replica (each in its own transaction)."""
    async with sessionmaker() as session:
        dead = await dead_holders(session, me=me)
    done = []
    for replica in dead:
        async with sessionmaker() as session, session.begin():
            recovered = await recover_replica(session, replica, checkpoint_seconds=checkpoint_seconds, feed=feed)
        if recovered is not None:
            QUOTA_RECOVERED.inc(recovered.reservations)
            log.warning(
                "quota_reservations_recovered",
                replica=replica.replica,
                reason=replica.reason,
                reservations=recovered.reservations,
                users=recovered.users,
                tokens_released=recovered.tokens_released,
                tokens_charged=recovered.tokens_charged,
            )
            done.append(recovered)
    return done


# --- holds that no reservation backs --------------------------------------------------------------


async def reconcile_counter(session: AsyncSession, user_id: int, day: date) -> tuple[int, int] | None:
    """Set one counter's `reserved_tokens` (and `reserved_cost`) to the grants (and held costs) of its reservations,
    in the session's transaction; (before, after) tokens when they differed. The counter's row is locked first
    (SQLite: the session's write transaction), so no reservation can be taken or settled on it meanwhile: each does
    so under the same lock."""
    locked = select(UsageCounter.reserved_tokens, UsageCounter.reserved_cost).where(
        UsageCounter.user_id == user_id, UsageCounter.day == day
    )
    if session.get_bind().dialect.name == "postgresql":
        locked = locked.with_for_update()
    found = (await session.execute(locked)).one_or_none()
    if found is None:
        return None
    before, before_cost = found
    held, held_cost = (
        await session.execute(
            select(
                func.coalesce(func.sum(QuotaReservation.granted), 0), func.coalesce(func.sum(QuotaReservation.cost), 0)
            ).where(QuotaReservation.user_id == user_id, QuotaReservation.day == day)
        )
    ).one()
    if int(held) == before and int(held_cost) == before_cost:
        return None
    await session.execute(
        update(UsageCounter)
        .where(UsageCounter.user_id == user_id, UsageCounter.day == day)
        .values(reserved_tokens=int(held), reserved_cost=int(held_cost), updated_at=utcnow())
    )
    return before, int(held)


async def _holds_by_budget(session: AsyncSession) -> dict[str, tuple[int, int]]:
    """(tokens, cost) held on each budget counter by the reservations in flight."""
    held: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rows = await session.execute(
        select(QuotaReservation.granted, QuotaReservation.cost, QuotaReservation.budgets).where(
            QuotaReservation.budgets != ""
        )
    )
    for granted, cost, budgets in rows:
        for key in budgets.split(","):
            if key:
                held[key][0] += granted
                held[key][1] += cost
    return {key: (tokens, cost) for key, (tokens, cost) in held.items()}


async def reconcile_budgets(sessionmaker: async_sessionmaker[AsyncSession], *, since: date) -> int:
    """Repair the budget counters (periods starting on or after `since`, and any still holding something) whose
    holds differ from their reservations'; how many were repaired."""
    async with sessionmaker() as session:
        held = await _holds_by_budget(session)
        rows = await session.execute(
            select(BudgetCounter.key, BudgetCounter.reserved_tokens, BudgetCounter.reserved_cost).where(
                (BudgetCounter.start >= since)
                | (BudgetCounter.reserved_tokens != 0)
                | (BudgetCounter.reserved_cost != 0)
            )
        )
        suspects = [key for key, tokens, cost in rows if held.get(key, (0, 0)) != (tokens, cost)]
    repaired = 0
    for key in suspects:
        async with sessionmaker() as session, session.begin():
            locked = select(BudgetCounter.reserved_tokens, BudgetCounter.reserved_cost).where(BudgetCounter.key == key)
            if session.get_bind().dialect.name == "postgresql":
                locked = locked.with_for_update()
            found = (await session.execute(locked)).one_or_none()
            now_held = (await _holds_by_budget(session)).get(key, (0, 0))
            if found is None or tuple(found) == now_held:
                continue
            await session.execute(
                update(BudgetCounter)
                .where(BudgetCounter.key == key)
                .values(reserved_tokens=now_held[0], reserved_cost=now_held[1], updated_at=utcnow())
            )
            log.warning("budget_holds_reconciled", key=key, before=list(found), after=list(now_held))
            repaired += 1
    return repaired


async def reconcile(sessionmaker: async_sessionmaker[AsyncSession], *, feed: EventFeed | None = None) -> int:
    """Repair the recent counters whose holds differ from their reservations; how many were repaired."""
    since = utcnow().date() - timedelta(days=RECONCILE_DAYS)
    held = func.coalesce(func.sum(QuotaReservation.granted), 0)
    held_cost = func.coalesce(func.sum(QuotaReservation.cost), 0)
    candidates = (
        select(UsageCounter.user_id, UsageCounter.day)
        .outerjoin(
            QuotaReservation,
            (QuotaReservation.user_id == UsageCounter.user_id) & (QuotaReservation.day == UsageCounter.day),
        )
        .where(UsageCounter.day >= since)
        .group_by(UsageCounter.user_id, UsageCounter.day, UsageCounter.reserved_tokens, UsageCounter.reserved_cost)
        .having((UsageCounter.reserved_tokens != held) | (UsageCounter.reserved_cost != held_cost))
    )
    async with sessionmaker() as session:
        found = (await session.execute(candidates)).all()
    repaired = 0
    for user_id, day in found:
        async with sessionmaker() as session, session.begin():
            changed = await reconcile_counter(session, user_id, day)
            if changed is not None:
                await record(
                    session,
                    QuotaHoldsReconciledEvent(user_id=user_id, day=day, before=changed[0], after=changed[1]),
                    actor=ACTOR,
                    feed=feed,
                )
        if changed is not None:
            repaired += 1
            log.warning("quota_holds_reconciled", user_id=user_id, day=str(day), before=changed[0], after=changed[1])
    return repaired + await reconcile_budgets(sessionmaker, since=since - timedelta(days=31))


class ReservationRecovery:
    """Runs `recover` at the start (before serving) and then every `interval_seconds`; `reconcile` every
    RECONCILE_SECONDS."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        replica: str,
        interval_seconds: float,
        checkpoint_seconds: float,
        feed: EventFeed | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.replica = replica
        self.interval = interval_seconds
        self.checkpoint_seconds = checkpoint_seconds
        self.feed = feed
        self._task: asyncio.Task[None] | None = None
        self._reconciled_at = 0.0

    async def run_once(self) -> list[Recovered]:
        recovered = await recover(
            self._sessionmaker, me=self.replica, checkpoint_seconds=self.checkpoint_seconds, feed=self.feed
        )
        if monotonic() - self._reconciled_at >= RECONCILE_SECONDS:
            self._reconciled_at = monotonic()
            await reconcile(self._sessionmaker, feed=self.feed)
        return recovered

    async def start(self) -> None:
        # The database may be away at the start: the loop tries again.
        await logged(self.run_once, log=log, event="quota_recovery_failed")
        self._task = asyncio.create_task(
            every(self.interval, self.run_once, log=log, event="quota_recovery_failed"), name="gatehouse-quota-recovery"
        )

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
