"""The alert watcher: every BUDGET_ALERT_CHECK_SECONDS, on every replica, off the request path.

A check is one query (service.near_limits). The crossings it finds that this process has not seen yet are looked
up among the recorded alerts; those still new are inserted, and the replica whose insert succeeds announces each
one: a `budget.threshold` live-feed event, `gatehouse_budget_alerts_total`, a log line, and (ALERT_WEBHOOK_URL)
its webhook, sent in the background with retries. The others learn at their next check that it is recorded and
stay silent. A check also takes over deliveries whose sender's lease ran out, and once a minute refreshes
`gatehouse_budget_max_used_percent`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.alerts import deliveries, service
from gatehouse.alerts.service import AlertKey, Crossing
from gatehouse.alerts.webhook import Webhook
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import ALERT_WEBHOOKS, BUDGET_ALERTS, BUDGET_USED_PERCENT, child
from gatehouse.core.tasks import every
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import utcnow
from gatehouse.limits.budgets import MEASURES, SCOPE_NAMES, period_start
from gatehouse.settings import Settings

log = get_logger("gatehouse.alerts")
GAUGE_SECONDS = 60.0
LEASE_MARGIN = timedelta(seconds=30)  # beyond an attempt's longest time: clocks of replicas may differ this much


class AlertWatcher:
    """Checks the budgets, records and announces their crossings, and delivers their webhooks."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        replica: str,
        feed: EventFeed | None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.replica = replica
        self.feed = feed
        self.thresholds = settings.alert_thresholds
        self.interval = settings.budget_alert_check_seconds
        self.timezone = settings.quota_timezone
        self.currency = settings.price_currency
        self.webhook = Webhook.from_settings(settings)
        self._clock = clock
        self._seen: set[AlertKey] = set()  # crossings known to be recorded (current periods only)
        self._periods: tuple[date, date] | None = None
        self._checking = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._gauge_at: float | None = None
        self._retired_webhooks: dict[Webhook, asyncio.Task[None]] = {}  # replaced by a reload, closing once idle

    @property
    def lease(self) -> timedelta:
        """How long a sender holds a delivery past the start of its next attempt."""
        seconds = self.webhook.attempt_seconds if self.webhook is not None else 0.0
        return timedelta(seconds=seconds) + LEASE_MARGIN

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check every BUDGET_ALERT_CHECK_SECONDS (0, or no thresholds: never on this replica)."""
        if self.webhook is not None:
            await self.webhook.start()
        if self.interval and self.thresholds:
            check = every(self.interval, self.check, log=log, event="budget_alert_check_failed")
            self._task = asyncio.create_task(check, name="gatehouse-budget-alerts")

    async def close(self) -> None:
        """Stop checking; deliveries under way hand their lease back (another replica, or the next start, goes on)."""
        await stop_task(self._task)
        self._task = None
        sending = list(self._sending.values())
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        for retired, closing in list(self._retired_webhooks.items()):
            await stop_task(closing)
            await retired.close()
        if self.webhook is not None:
            await self.webhook.close()

    async def apply_settings(self, settings: Settings) -> None:
        """A reload: ALERT_WEBHOOK_* as they are now. Deliveries under way finish with the webhook they started with
        (its pool closes after them); later attempts and new alerts use the new one."""
        previous, self.webhook = self.webhook, Webhook.from_settings(settings)
        if self.webhook is not None:
            await self.webhook.start()
        if previous is not None:
            self._retired_webhooks[previous] = asyncio.create_task(self._close_when_idle(previous))

    async def _close_when_idle(self, webhook: Webhook) -> None:
        sending = list(self._sending.values())  # started before the reload: the only ones on this webhook
        await asyncio.gather(*sending, return_exceptions=True)
        await webhook.close()
        self._retired_webhooks.pop(webhook, None)

    # --- checking ----------------------------------------------------------------------------------------------

    async def check(self) -> list[int]:
        """One check; the ids of the alerts this replica recorded."""
        async with self._checking:
            now = self._clock()
            today = period_start(self.timezone, "d", now)
            month = period_start(self.timezone, "m", now)
            self._forget_past_periods(today, month)
            recorded: list[int] = []
            if self.thresholds:
                async with self.sessionmaker() as session:
                    rows = await service.near_limits(session, today=today, month=month, lowest=self.thresholds[0])
                new = [c for c in service.crossings(rows, self.thresholds) if c.key not in self._seen]
                if new:
                    recorded = await self._record(new, now)
            if self.webhook is not None:
                await self._take_over_orphans()
            if self._gauge_at is None or time.monotonic() - self._gauge_at >= GAUGE_SECONDS:
                await self.refresh_gauge()
            return recorded

    def _forget_past_periods(self, today: date, month: date) -> None:
        if self._periods != (today, month):
            self._periods = (today, month)
            self._seen = {key for key in self._seen if key[3] == (today if key[2] == "d" else month)}

    async def _record(self, new: list[Crossing], now: datetime) -> list[int]:
        recorded: list[tuple[Any, Any]] = []
        async with self.sessionmaker() as session, session.begin():
            known = await service.recorded(session, new)
            for crossing in new:
                if crossing.key in known:
                    continue
                payload = service.payload_of(crossing, at=now, timezone=self.timezone, currency=self.currency)
                target = self.webhook.target if self.webhook is not None else None
                made = await service.record(
                    session, crossing, at=now, replica=self.replica, payload=payload, target=target, lease=self.lease
                )
                if made is not None:
                    recorded.append(made)
        self._seen.update(c.key for c in new)  # recorded now, or before (here or by another replica)
        for alert, delivery in recorded:
            self._announce(alert)
            if delivery is not None:
                self._send(delivery.id)
        return [alert.id for alert, _ in recorded]

    def _announce(self, alert: Any) -> None:
        body = orjson.loads(alert.payload)
        child(BUDGET_ALERTS, SCOPE_NAMES[alert.scope], alert.measure, str(alert.threshold)).inc()
        if self.feed is not None:
            self.feed.publish(service.EVENT, {"alert_id": alert.id, **body})
        log.info(
            "budget_alert",
            alert_id=alert.id,
            budget=body["budget"]["key"],
            measure=alert.measure,
            threshold=alert.threshold,
            percent=body["percent"],
        )

    async def refresh_gauge(self) -> None:
        """Set gatehouse_budget_max_used_percent from the database (0 where no budget of the scope has a limit)."""
        self._gauge_at = time.monotonic()
        now = self._clock()
        async with self.sessionmaker() as session:
            found = await service.highest_percent(
                session, today=period_start(self.timezone, "d", now), month=period_start(self.timezone, "m", now)
            )
        for scope, name in SCOPE_NAMES.items():
            for measure in MEASURES:
                child(BUDGET_USED_PERCENT, name, measure).set(found.get((scope, measure), 0.0))

    # --- delivering --------------------------------------------------------------------------------------------

    async def _take_over_orphans(self) -> None:
        now = self._clock()
        async with self.sessionmaker() as session:
            found = [i for i in await deliveries.orphaned(session, now=now) if i not in self._sending]
        for delivery_id in found:
            async with self.sessionmaker() as session, session.begin():
                taken = await deliveries.claim(
                    session, delivery_id, replica=self.replica, now=now, until=now + self.lease
                )
            if taken:
                log.info("alert_delivery_taken_over", delivery_id=delivery_id)
                self._send(delivery_id)

    def _send(self, delivery_id: int) -> None:
        task = asyncio.create_task(self.deliver(delivery_id), name=f"gatehouse-alert-delivery-{delivery_id}")
        self._sending[delivery_id] = task
        task.add_done_callback(lambda _: self._sending.pop(delivery_id, None))

    async def wait_for_deliveries(self) -> None:
        """Until the deliveries under way have ended (tests, and a CLI that sends)."""
        while self._sending:
            await asyncio.gather(*list(self._sending.values()), return_exceptions=True)

    async def deliver(self, delivery_id: int) -> None:
        """Attempt a delivery this replica holds until it is delivered or given up, waiting between attempts."""
        try:
            while await self._attempt(delivery_id):
                pass
        except asyncio.CancelledError:
            await asyncio.shield(self._release(delivery_id))
            raise
        except Exception as exc:  # the database is away: the lease runs out and a check takes it over again
            log.warning("alert_delivery_failed", delivery_id=delivery_id, error=f"{type(exc).__name__}: {exc}")

    async def _attempt(self, delivery_id: int) -> bool:
        """One attempt (after waiting for its time); whether another one follows."""
        webhook = self.webhook
        if webhook is None:
            return False
        async with self.sessionmaker() as session:
            due = await deliveries.load(session, delivery_id)
        if due is None or due.status != "pending" or due.claimed_by != self.replica:
            return False
        if due.next_attempt_at is not None:
            wait = (due.next_attempt_at - self._clock()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
        deadline = due.created_at + timedelta(seconds=webhook.max_seconds)
        if due.attempts and self._clock() >= deadline:  # taken over too late to try again
            await self._write(
                delivery_id, outcome=None, attempts=due.attempts, status="failed", next_at=None, error=None
            )
            log.warning("alert_delivery_gave_up", delivery_id=delivery_id, attempts=due.attempts)
            return False
        outcome = await webhook.send(due.payload, event=service.EVENT)
        attempts = due.attempts + 1
        now = self._clock()
        ALERT_WEBHOOKS.labels(outcome="delivered" if outcome.delivered else "failed").inc()
        if outcome.delivered:
            status, next_at = "delivered", None
        else:
            next_at = now + timedelta(seconds=webhook.wait_after(attempts))
            status = "failed" if attempts >= webhook.max_attempts or next_at > deadline else "pending"
        kept = await self._write(
            delivery_id,
            outcome=outcome,
            attempts=attempts,
            status=status,
            next_at=next_at if status == "pending" else None,
            error=outcome.error,
        )
        event = "alert_delivered" if outcome.delivered else "alert_delivery_attempt_failed"
        log.info(event, delivery_id=delivery_id, attempt=attempts, status=status, http_status=outcome.status)
        return kept and status == "pending"

    async def _write(
        self,
        delivery_id: int,
        *,
        outcome: Any,
        attempts: int,
        status: str,
        next_at: datetime | None,
        error: str | None,
    ) -> bool:
        lease_until = next_at + self.lease if next_at is not None else None
        async with self.sessionmaker() as session, session.begin():
            return await deliveries.record_attempt(
                session,
                delivery_id,
                replica=self.replica,
                at=self._clock(),
                outcome=outcome,
                attempts=attempts,
                status=status,
                next_attempt_at=next_at,
                lease_until=lease_until,
                error=error,
            )

    async def _release(self, delivery_id: int) -> None:
        try:
            async with self.sessionmaker() as session:
                due = await deliveries.load(session, delivery_id)
            at = max(due.next_attempt_at, self._clock()) if due and due.next_attempt_at else self._clock()
            async with self.sessionmaker() as session, session.begin():
                await deliveries.release(session, delivery_id, replica=self.replica, at=at)
        except Exception as exc:  # its lease runs out by itself
            log.warning("alert_delivery_release_failed", delivery_id=delivery_id, error=f"{type(exc).__name__}: {exc}")
