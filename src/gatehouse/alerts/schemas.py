"""Response models of the alerts API: each alert as its webhook described it, with its deliveries."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gatehouse.alerts.models import AlertDelivery, BudgetAlert
from gatehouse.alerts.service import SentTest


class DeliveryRead(BaseModel):
    """One alert's webhook: `pending` (attempts go on), `delivered` (a 2xx answer) or `failed` (attempts or time
    ran out); `target` is the URL's scheme and host."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    target: str
    status: str
    attempts: int
    last_status: int | None = Field(description="The HTTP status of the last answer (null: none came).")
    last_error: str | None = Field(description="What went wrong with the last failed attempt.")
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class BudgetRead(BaseModel):
    """The budget an alert is about."""

    key: str = Field(description="scope, subject id, period and its start, as budget counters are named.")
    scope: str = Field(description="user, group or key")
    subject_id: int
    subject_name: str = Field(description="The user's email, the group's or the key's name, as it was.")
    period: str = Field(description="day or month, in QUOTA_TIMEZONE")
    start: date
    resets_at: datetime
    timezone: str


class AlertRead(BaseModel):
    """A budget's crossing of a threshold, as its webhook body says (`event_id` is the body's `id`)."""

    id: int
    event_id: str
    budget: BudgetRead
    measure: str = Field(description="messages, tokens or spend")
    threshold: int = Field(description="percent of the limit")
    used: int | float = Field(description="When noticed: a count, or for spend an amount in `currency`.")
    limit: int | float
    percent: float
    currency: str | None = Field(description="PRICE_CURRENCY for spend; null for messages and tokens.")
    created_at: datetime
    replica: str = Field(description="The replica that recorded and announced it.")
    deliveries: list[DeliveryRead]

    @classmethod
    def of(cls, alert: BudgetAlert, deliveries: list[AlertDelivery]) -> AlertRead:
        body: dict[str, Any] = orjson.loads(alert.payload)
        return cls(
            id=alert.id,
            event_id=body["id"],
            budget=BudgetRead(**body["budget"]),
            measure=alert.measure,
            threshold=alert.threshold,
            used=body["used"],
            limit=body["limit"],
            percent=body["percent"],
            currency=body["currency"],
            created_at=alert.created_at,
            replica=alert.replica,
            deliveries=[DeliveryRead.model_validate(row) for row in deliveries],
        )


class AlertSettingsRead(BaseModel):
    """How this replica alerts: its thresholds, how often it checks, and its webhook's scheme and host (null:
    none)."""

    thresholds: list[int]
    check_seconds: float
    webhook: str | None


class AlertPage(BaseModel):
    settings: AlertSettingsRead
    items: list[AlertRead]
    next_cursor: int | None = Field(description="Pass as `before` for the next page (null: this is the last).")


class WebhookTestRead(BaseModel):
    """What a test webhook did: delivered (a 2xx answer) or not, and why not."""

    event_id: str
    target: str
    delivered: bool
    status_code: int | None
    error: str | None
    seconds: float

    @classmethod
    def of(cls, sent: SentTest) -> WebhookTestRead:
        outcome = sent.outcome
        return cls(
            event_id=sent.event_id,
            target=sent.target,
            delivered=outcome.delivered,
            status_code=outcome.status,
            error=outcome.error,
            seconds=round(outcome.seconds, 3),
        )
