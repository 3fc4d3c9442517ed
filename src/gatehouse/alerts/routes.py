"""Routes: /admin/alerts (the alerts raised, with their webhook deliveries) and /admin/alerts/test."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gatehouse.alerts import service
from gatehouse.alerts.errors import WebhookNotConfigured
from gatehouse.alerts.schemas import AlertPage, AlertRead, AlertSettingsRead, WebhookTestRead
from gatehouse.alerts.watcher import AlertWatcher
from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.db.base import utcnow
from gatehouse.deps import ActorDep, SessionDep
from gatehouse.errors import errors

router = APIRouter(prefix="/admin/alerts", tags=["alerts"])
WatcherDep = Annotated[AlertWatcher, provided(AlertWatcher)]
MAX_ID = 2**31 - 1


@router.get("", response_model=AlertPage, dependencies=[require(Role.MONITOR)])
async def list_alerts(
    session: SessionDep,
    watcher: WatcherDep,
    delivery: Annotated[
        Literal["pending", "delivered", "failed"] | None,
        Query(description="Only alerts with a webhook delivery in this state."),
    ] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="The previous page's `next_cursor`.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertPage:
    """Budget alerts, newest first, each with its webhook deliveries; and how this replica alerts."""
    found = await service.list_alerts(session, before_id=before, limit=limit + 1, delivery=delivery)
    page = [AlertRead.of(alert, rows) for alert, rows in found[:limit]]
    settings = AlertSettingsRead(
        thresholds=list(watcher.thresholds),
        check_seconds=watcher.interval,
        webhook=watcher.webhook.target if watcher.webhook is not None else None,
    )
    return AlertPage(settings=settings, items=page, next_cursor=page[-1].id if len(found) > limit else None)


@router.post(
    "/test", responses=errors(WebhookNotConfigured), response_model=WebhookTestRead, dependencies=[require(Role.ADMIN)]
)
async def test_webhook(session: SessionDep, watcher: WatcherDep, actor: ActorDep) -> WebhookTestRead:
    """Send a test event (`alert.test`) to ALERT_WEBHOOK_URL now, signed as every alert is; one attempt, audited.
    409 alert_webhook_not_configured when no URL is set."""
    sent = await service.send_test(session, webhook=watcher.webhook, actor=actor, at=utcnow())
    return WebhookTestRead.of(sent)
