"""Request and response models for /admin/prices. Amounts are exact: read from JSON numbers or decimal strings
through their text, and written as JSON numbers (each also as an exact integer of millionths)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from gatehouse.fields import PriceAmount
from gatehouse.limits.prices.money import decimal_of_micros, json_number
from gatehouse.limits.prices.service import PriceListing
from gatehouse.limits.prices.table import PriceVersion

# A decimal amount of the currency, written as a JSON number.
DecimalNumber = Annotated[Decimal, PlainSerializer(json_number, return_type=float, when_used="json")]


class PriceUpdate(BaseModel):
    """PUT /admin/prices/{model}: a new version of a model's price, per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: PriceAmount = Field(description="Per million prompt tokens: a number or a decimal string, >= 0.")
    output: PriceAmount = Field(description="Per million completion tokens.")
    cached_input: PriceAmount | None = Field(
        default=None, description="Per million prompt tokens read from a prompt cache; default: `input`."
    )
    currency: str | None = Field(
        default=None, max_length=16, description="PRICE_CURRENCY, when given: another is refused (no exchange rates)."
    )
    effective_from: AwareDatetime | None = Field(
        default=None, description="When it takes effect (ISO 8601 with a timezone): now (default) or later."
    )


class PriceVersionRead(BaseModel):
    """One version of a name's price (`removed`: it removes the price from `effective_from` on)."""

    id: int
    model: str
    pattern: bool = Field(description="True for a `*` pattern, which prices every model it matches.")
    currency: str
    removed: bool
    input: DecimalNumber | None = Field(description="Per million prompt tokens; null in a removal.")
    output: DecimalNumber | None
    cached_input: DecimalNumber | None
    input_micros: int | None = Field(description="`input` in millionths of the currency (exact).")
    output_micros: int | None
    cached_input_micros: int | None
    effective_from: datetime
    source: str = Field(description="`api` (the API or the CLI) or `config` (GATEHOUSE_CONFIG's `prices:`).")
    created_by: int | None = Field(description="The user who made it; null: the CLI or the config file.")
    created_at: datetime

    @classmethod
    def of(cls, version: PriceVersion) -> PriceVersionRead:
        price = version.price
        return cls(
            id=version.id,
            model=version.model,
            pattern="*" in version.model,
            currency=version.currency,
            removed=price is None,
            input=decimal_of_micros(price.input_micros) if price else None,
            output=decimal_of_micros(price.output_micros) if price else None,
            cached_input=decimal_of_micros(price.cached_input_micros) if price else None,
            input_micros=price.input_micros if price else None,
            output_micros=price.output_micros if price else None,
            cached_input_micros=price.cached_input_micros if price else None,
            effective_from=version.effective_from,
            source=version.source,
            created_by=version.created_by,
            created_at=version.created_at,
        )


class PriceRead(BaseModel):
    """A name priced now, or a model clients can use that nothing prices (`priced: false`: it costs 0)."""

    model: str
    pattern: bool
    priced: bool
    current: PriceVersionRead | None = Field(description="The version in force now; null when unpriced.")
    scheduled: PriceVersionRead | None = Field(description="The next version of this name, when one is scheduled.")

    @classmethod
    def of(cls, line: PriceListing) -> PriceRead:
        return cls(
            model=line.model,
            pattern="*" in line.model,
            priced=line.current is not None,
            current=PriceVersionRead.of(line.current) if line.current else None,
            scheduled=PriceVersionRead.of(line.scheduled) if line.scheduled else None,
        )


class PriceList(BaseModel):
    currency: str = Field(description="PRICE_CURRENCY: the currency of every price and cost.")
    items: list[PriceRead]


class PriceHistoryPage(BaseModel):
    items: list[PriceVersionRead]
    next_cursor: int | None = Field(description="Pass as `before` for the next page; null: no more.")
