"""Webhook deliveries as rows: who sends each one, and what every attempt did.

A delivery is `pending` until an attempt succeeds (`delivered`) or the attempts or the time allowed run out
(`failed`). The replica that recorded the alert holds it (`claimed_by`) until `lease_until`, which each attempt's
record moves past the next attempt; a replica that dies or stops leaves a lease that runs out, and any replica
with the webhook set then claims it with one conditional UPDATE and carries on from its attempt count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.alerts.models import AlertDelivery, BudgetAlert
from gatehouse.alerts.webhook import Outcome

CLAIM_BATCH = 20  # deliveries one check takes over at most


@dataclass(frozen=True, slots=True)
class Due:
    """A pending delivery as its sender needs it."""

    id: int
    payload: bytes
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    status: str
    claimed_by: str | None


def _unclaimed(now: datetime) -> ColumnElement[bool]:
    return (AlertDelivery.status == "pending") & or_(
        AlertDelivery.lease_until.is_(None), AlertDelivery.lease_until < now
    )


async def orphaned(session: AsyncSession, *, now: datetime) -> list[int]:
    """Pending deliveries whose sender's lease ran out (it died or stopped), oldest first."""
    query = select(AlertDelivery.id).where(_unclaimed(now)).order_by(AlertDelivery.id).limit(CLAIM_BATCH)
    return list((await session.execute(query)).scalars())


async def claim(session: AsyncSession, delivery_id: int, *, replica: str, now: datetime, until: datetime) -> bool:
    """Take over a delivery whose lease ran out; False when another replica took it first."""
    result = await session.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == delivery_id, _unclaimed(now))
        .values(claimed_by=replica, lease_until=until)
    )
    return bool(getattr(result, "rowcount", 0))


async def load(session: AsyncSession, delivery_id: int) -> Due | None:
    """A delivery with its alert's body."""
    row = (
        await session.execute(
            select(AlertDelivery, BudgetAlert.payload)
            .join(BudgetAlert, BudgetAlert.id == AlertDelivery.alert_id)
            .where(AlertDelivery.id == delivery_id)
        )
    ).first()
    if row is None:
        return None
    delivery, payload = row
    return Due(
        id=delivery.id,
        payload=payload.encode(),
        attempts=delivery.attempts,
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at,
        status=delivery.status,
        claimed_by=delivery.claimed_by,
    )


async def record_attempt(
    session: AsyncSession,
    delivery_id: int,
    *,
    replica: str,
    at: datetime,
    outcome: Outcome | None,
    attempts: int,
    status: str,
    next_attempt_at: datetime | None,
    lease_until: datetime | None,
    error: str | None = None,
) -> bool:
    """What an attempt did (`outcome`; None: the delivery was given up without one), if `replica` still holds the
    delivery; False when it no longer does (its lease ran out and another replica took over)."""
    values: dict[str, object] = {
        "attempts": attempts,
        "status": status,
        "next_attempt_at": next_attempt_at,
        "lease_until": lease_until,
    }
    if outcome is not None:
        values.update(last_attempt_at=at, last_status=outcome.status)
        if outcome.delivered:
            values["delivered_at"] = at
    if error is not None:  # a success keeps the error of the attempt before it: the delivery's history
        values["last_error"] = error[:500]
    result = await session.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == delivery_id, AlertDelivery.claimed_by == replica, AlertDelivery.status == "pending")
        .values(**values)
    )
    return bool(getattr(result, "rowcount", 0))


async def release(session: AsyncSession, delivery_id: int, *, replica: str, at: datetime) -> None:
    """Let another replica take the delivery over from `at` on (this one is stopping)."""
    await session.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == delivery_id, AlertDelivery.claimed_by == replica, AlertDelivery.status == "pending")
        .values(lease_until=at)
    )
