"""Request and response models for budgets: the six limits every user, group and key may carry, and the state of
each budget (usage against its limits, with when it resets)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatehouse.fields import Count, SmallCount
from gatehouse.limits.budgets import column_of
from gatehouse.limits.prices.money import decimal_of_nanos, json_number

# At most 9 decimal places (billionths: exact), and at most a billion of the currency.
Spend = Decimal
SPEND = Field(default=None, ge=0, le=10**9, decimal_places=9)
LIMIT_FIELDS = (
    "messages_per_day",
    "tokens_per_day",
    "spend_per_day",
    "messages_per_month",
    "tokens_per_month",
    "spend_per_month",
)


class LimitsUpdate(BaseModel):
    """Only the limits sent change; `null` lifts one. Spend in PRICE_CURRENCY (a number or a decimal string, at most
    9 decimal places)."""

    model_config = ConfigDict(extra="forbid")

    messages_per_day: SmallCount | None = None
    tokens_per_day: Count | None = None
    spend_per_day: Spend | None = SPEND
    messages_per_month: SmallCount | None = None
    tokens_per_month: Count | None = None
    spend_per_month: Spend | None = SPEND

    def columns(self) -> dict[str, int | None]:
        """The subject-table columns to set (spend in billionths), for the fields sent."""
        found: dict[str, int | None] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            measure, _, period = name.partition("_per_")
            column = column_of(measure, period[0])
            if measure == "spend" and value is not None:
                value = int(Decimal(value).scaleb(9))
            found[column] = value
        return found


def spend_number(nanos: int | None) -> int | float | None:
    return None if nanos is None else json_number(decimal_of_nanos(nanos))


class LimitsRead(BaseModel):
    """A subject's limits (null: none); spend in PRICE_CURRENCY."""

    messages_per_day: int | None
    tokens_per_day: int | None
    spend_per_day: int | float | None
    messages_per_month: int | None
    tokens_per_month: int | None
    spend_per_month: int | float | None
    currency: str

    @classmethod
    def of(cls, row: Any, currency: str) -> LimitsRead:
        return cls(
            messages_per_day=row.messages_per_day,
            tokens_per_day=row.tokens_per_day,
            spend_per_day=spend_number(row.spend_per_day_nanos),
            messages_per_month=row.messages_per_month,
            tokens_per_month=row.tokens_per_month,
            spend_per_month=spend_number(row.spend_per_month_nanos),
            currency=currency,
        )


class Measure(BaseModel):
    used: int | float = Field(description="Settled so far this period (spend in the currency).")
    held: int | float = Field(description="Held by requests in progress (tokens and spend; 0 for messages).")
    limit: int | float | None = Field(description="null: no limit.")
    percent: float | None = Field(description="Used (settled) share of the limit, in percent; null without limit.")


class BudgetState(BaseModel):
    """One budget: a subject's day or month, its usage against its limits, and when it resets."""

    scope: Literal["user", "group", "key"]
    subject_id: int
    name: str = Field(description="The user's email, the group's name, or the key's name and prefix.")
    period: Literal["day", "month"]
    start: date = Field(description="The period's first day (QUOTA_TIMEZONE).")
    resets_at: datetime
    counted: bool = Field(
        description="True when the budget has a limit and so a counter of its own (exact, in-flight requests "
        "held); false: its usage is summed from the request log (settled requests only)."
    )
    messages: Measure
    tokens: Measure
    spend: Measure
    currency: str
    unpriced_requests: int = Field(
        default=0, description="Requests of this period whose model had no price (they cost 0): from the request log."
    )
