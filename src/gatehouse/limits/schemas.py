"""Request and response models for limits routes."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field, JsonValue

from gatehouse.fields import MAX_DB_INT, DbInteger
from gatehouse.limits.prices.schemas import DecimalNumber
from gatehouse.limits.ratelimit import RULES

# The rules a change may name, for the document (the service answers 400 unknown_rate_limit for others).
RULE_NAMES: list[JsonValue] = [*sorted(RULES)]
RULE_LIMITS: JsonValue = {
    name: {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_DB_INT}, {"type": "null"}]} for name in RULES
}


class RateLimitRead(BaseModel):
    name: str
    limit: int | None = Field(description="Requests allowed per window; null: no limit.")
    per: str = Field(
        description="What is counted separately: `user`, `key` (an API key), `ip` or `account` (a login email)."
    )
    window: str
    window_seconds: int
    overridden: bool = Field(description="True when an operator set this value; false: the default applies.")
    description: str


class RateLimitUpdate(BaseModel):
    limits: dict[str, DbInteger | None] = Field(
        default_factory=dict,
        description="Rule name -> new limit (an integer >= 0, or null for no limit).",
        json_schema_extra={"properties": RULE_LIMITS, "additionalProperties": False},
    )
    reset: list[str] = Field(
        default_factory=list,
        description="Rule names to return to their defaults.",
        json_schema_extra={"items": {"type": "string", "enum": RULE_NAMES}},
    )


class UsageRead(BaseModel):
    user_id: int
    email: str
    day: date
    messages: int
    messages_per_day: int | None
    messages_percent: float | None
    tokens: int
    tokens_per_day: int | None
    tokens_percent: float | None
    reserved_tokens: int = Field(description="Tokens held by requests still in progress.")
    spend: DecimalNumber = Field(
        description="What the day's requests cost, in `currency`, at the prices of their time (settled requests "
        "only: one still in progress counts once it ends)."
    )
    spend_nanos: int = Field(description="`spend` in billionths of `currency` (exact).")
    currency: str = Field(description="PRICE_CURRENCY.")
    unpriced_requests: int = Field(
        description="The day's requests for models without a price: they cost 0 and are not in `spend`."
    )


class MyUsage(UsageRead):
    resets_at: datetime


class UsageDay(BaseModel):
    day: date
    messages: int
    tokens: int
    spend: DecimalNumber = Field(description="What the day's settled requests cost, in `currency`.")
    spend_nanos: int = Field(description="`spend` in billionths of `currency` (exact).")
    unpriced_requests: int = Field(description="The day's requests for models without a price (they cost 0).")


class MyUsageHistory(BaseModel):
    start: date = Field(description="The first day shown (QUOTA_TIMEZONE).")
    end: date = Field(description="The last day shown: today.")
    currency: str = Field(description="PRICE_CURRENCY.")
    days: list[UsageDay] = Field(description="Every day from `start` to `end`, oldest first (zeros on quiet days).")
