"""Recovering the quota reservations of a replica that died with requests in flight.

Every replica checks, at its start and then every heartbeat interval, whether the reservations in
`quota_reservation` belong to a replica that is gone: its heartbeat is stale (STALE_BEATS intervals), or it ran on
this host and its pid no longer runs (a restarted process knows at once). It then settles them in one transaction
(DELETE ... RETURNING the rows, the counters updated from them, an audit event): on PostgreSQL a second replica
doing the same finds the rows already gone, and the dead replica's own settlement, should it come back, finds
nothing to settle either (limits/quotas.py), so each reservation is settled exactly once.

What a recovered request is counted as having used: its last checkpoint (the prompt, and the completion tokens
relayed so far, written every QUOTA_CHECKPOINT_SECONDS), plus what it could have produced since at the rate it was
producing, up to the latest moment its replica can have been alive (one checkpoint interval after the replica's
last checkpoint, and one heartbeat after its last heartbeat), never more than its grant. At a steady rate the
count is therefore high by at most one checkpoint interval's worth of that request's tokens (50 tokens for a
stream of 25 tokens a second at the default 2 s), and it is low only when a request sped up in its last interval,
by what it produced beyond its former rate. It never exceeds the grant, so the quota is never passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import QUOTA_RECOVERED
from gatehouse.db.base import UTCDateTime, utcnow
from gatehouse.jobs.models import ReplicaBeat
from gatehouse.jobs.replicas import HEARTBEAT_SECONDS, is_live, known_dead
from gatehouse.limits.events import QuotaReservationsRecoveredEvent
from gatehouse.limits.models import QuotaReservation, UsageCounter

log = get_logger("gatehouse.quotas")
ACTOR = Actor.system("quota-recovery")


def charged_tokens(row: Any, alive_until: datetime) -> int:
    """What a recovered reservation's request is counted as having used (see the module docstring)."""
    completion = row.completion_tokens
    extra = 0.0
    if row.checkpoint_at is not None and completion:
        elapsed = (row.checkpoint_at - row.created_at).total_seconds()
        if elapsed > 0:
            extra = completion / elapsed * max(0.0, (alive_until - row.checkpoint_at).total_seconds())
    used = int(row.prompt_tokens) + int(completion) + math.ceil(extra)
    return min(used, int(row.granted)) if row.granted else used


@dataclass(frozen=True, slots=True)
class Recovered:
    """One dead replica's reservations, settled."""

    replica: str
    reason: str
    reservations: int
    users: list[int]
    tokens_released: int
    tokens_charged: int


async def dead_holders(session: AsyncSession, *, me: str, checkpoint_seconds: float) -> dict[str, tuple[str, datetime]]:
    """The replicas other than `me` that hold reservations and are gone: {replica: (why, alive until)}.

    "Alive until" is the latest moment the replica can have been producing: no later than one heartbeat after its
    last, and no later than one checkpoint interval after its last checkpoint (it writes one per interval while
    its requests make progress)."""
    last_written = func.max(
        func.coalesce(QuotaReservation.checkpoint_at, QuotaReservation.created_at), type_=UTCDateTime()
    )
    rows = await session.execute(
        select(QuotaReservation.replica, last_written)
        .where(QuotaReservation.replica != me)
        .group_by(QuotaReservation.replica)
    )
    holders: dict[str, datetime] = {replica: written for replica, written in rows}
    if not holders:
        return {}
    now = utcnow()
    beats = {
        row.id: row for row in (await session.execute(select(ReplicaBeat).where(ReplicaBeat.id.in_(holders)))).scalars()
    }
    dead: dict[str, tuple[str, datetime]] = {}
    for replica, written in holders.items():
        beat = beats.get(replica)
        until = min(now, written + timedelta(seconds=checkpoint_seconds))
        if beat is None:
            dead[replica] = ("no heartbeat", until)
            continue
        until = min(until, beat.seen_at + timedelta(seconds=beat.heartbeat_seconds or HEARTBEAT_SECONDS))
        if known_dead(beat, me=me):
            dead[replica] = ("process gone", until)
        elif not is_live(beat, now):
            dead[replica] = ("heartbeat stale", until)
    return dead


async def recover_replica(
    session: AsyncSession, replica: str, *, reason: str, alive_until: datetime, feed: EventFeed | None = None
) -> Recovered | None:
    """Settle a dead replica's reservations in the session's transaction; None when another replica did first."""
    taken = (
        await session.execute(
            delete(QuotaReservation)
            .where(QuotaReservation.replica == replica)
            .returning(
                QuotaReservation.user_id,
                QuotaReservation.day,
                QuotaReservation.granted,
                QuotaReservation.prompt_tokens,
                QuotaReservation.completion_tokens,
                QuotaReservation.created_at,
                QuotaReservation.checkpoint_at,
            )
        )
    ).all()
    if not taken:
        return None
    counters: dict[tuple[int, date], list[int]] = defaultdict(lambda: [0, 0])
    for row in taken:
        totals = counters[(row.user_id, row.day)]
        totals[0] += row.granted
        totals[1] += charged_tokens(row, alive_until)
    for (user_id, day), (granted, charged) in sorted(counters.items()):
        released = UsageCounter.reserved_tokens - granted
        await session.execute(
            update(UsageCounter)
            .where(UsageCounter.user_id == user_id, UsageCounter.day == day)
            .values(
                tokens=UsageCounter.tokens + charged,
                reserved_tokens=case((released < 0, 0), else_=released),
                updated_at=utcnow(),
            )
        )
    recovered = Recovered(
        replica=replica,
        reason=reason,
        reservations=len(taken),
        users=sorted({user_id for user_id, _ in counters}),
        tokens_released=sum(granted for granted, _ in counters.values()),
        tokens_charged=sum(charged for _, charged in counters.values()),
    )
    await record(
        session,
        QuotaReservationsRecoveredEvent(
            replica=replica,
            reason=reason,
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
        dead = await dead_holders(session, me=me, checkpoint_seconds=checkpoint_seconds)
    done = []
    for replica, (reason, alive_until) in sorted(dead.items()):
        async with sessionmaker() as session, session.begin():
            recovered = await recover_replica(session, replica, reason=reason, alive_until=alive_until, feed=feed)
        if recovered is not None:
            QUOTA_RECOVERED.inc(recovered.reservations)
            log.warning(
                "quota_reservations_recovered",
                replica=replica,
                reason=reason,
                reservations=recovered.reservations,
                users=recovered.users,
                tokens_released=recovered.tokens_released,
                tokens_charged=recovered.tokens_charged,
            )
            done.append(recovered)
    return done


class ReservationRecovery:
    """Runs `recover` at the start (before serving) and then every `interval_seconds`."""

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

    async def run_once(self) -> list[Recovered]:
        return await recover(
            self._sessionmaker, me=self.replica, checkpoint_seconds=self.checkpoint_seconds, feed=self.feed
        )

    async def start(self) -> None:
        try:
            await self.run_once()
        except Exception as exc:  # the database may be away at the start: the loop tries again
            log.warning("quota_recovery_failed", error=f"{type(exc).__name__}: {exc}")
        self._task = asyncio.create_task(self._forever(), name="gatehouse-quota-recovery")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("quota_recovery_failed", error=f"{type(exc).__name__}: {exc}")
