"""Field types shared by every domain's request schemas and routes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

MAX_DB_INT = 2**31 - 1  # INTEGER on SQLite and PostgreSQL alike (int4); larger ids cannot exist


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here, a 422 naming the field, not a 500 at the INSERT.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A client-supplied string that may reach the database (the document says so with a pattern).
Text = Annotated[str, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": r"^[^\u0000]*$"})]


def _json_integer(value: Any) -> Any:
    # pydantic's lax mode reads "12" and true as integers; JSON Schema's integer is a number without a fraction
    # (12 or 12.0), so a string or a boolean is refused, as the document says.
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON integer (a number, not a string or a boolean)")
    return value


def _not_a_number(value: Any) -> Any:
    # pydantic reads a number (even "0.5" in a query) as a Unix time; the document says an ISO 8601 date(-time).
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be an ISO 8601 date or date-time (e.g. 2026-03-01T09:00:00Z), not a number")
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("must be an ISO 8601 date or date-time (e.g. 2026-03-01T09:00:00Z), not a number")
    return value


# A date-time with a timezone, in ISO 8601 only (never a Unix time), as the document's `date-time` says.
IsoMoment = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]
# A date (YYYY-MM-DD), never a Unix time.
IsoDate = Annotated[date, BeforeValidator(_not_a_number)]

# An integer in a request body, exactly as JSON Schema's `integer` (the document's word for it). The bounds come
# before the validator, so the document shows them as minimum/maximum.
JsonInteger = Annotated[int, BeforeValidator(_json_integer)]
# An integer an INTEGER column holds (no lower bound here: a service names a negative one, 400).
DbInteger = Annotated[int, Field(le=MAX_DB_INT), BeforeValidator(_json_integer)]
# A count of messages, a rate-limit value: 0 up to an INTEGER column's maximum.
SmallCount = Annotated[int, Field(ge=0, le=MAX_DB_INT), BeforeValidator(_json_integer)]
# A count of tokens: 0 up to 2**53, where every integer is still exact as a JSON number read as a float.
MAX_COUNT = 2**53
Count = Annotated[int, Field(ge=0, le=MAX_COUNT), BeforeValidator(_json_integer)]

# A database id in a path: out of range is a 422 naming the parameter, not an overflow in the driver.
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT)]


# Prices, per million tokens: at most 6 decimal places (exact millionths of the currency, as they are stored), and
# at most one unit of the currency per token, so that a request's cost always fits a BIGINT of billionths.
PRICE_DECIMALS = 6
MAX_PRICE = Decimal(1_000_000)


def parse_price(value: Any) -> Decimal:
    """A price per million tokens, exactly: a JSON number or a decimal string, read through its text (never as a
    float), >= 0, with at most PRICE_DECIMALS decimal places."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError('must be a number or a decimal string, e.g. 2.5 or "2.5"')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"must be a decimal number, e.g. 2.5; got {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"must be a finite number; got {value!r}")
    if amount < 0:
        raise ValueError(f"must be >= 0; got {value}")
    if amount > MAX_PRICE:
        raise ValueError(f"must be at most {MAX_PRICE} per million tokens; got {value}")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_DECIMALS:
        raise ValueError(f"must have at most {PRICE_DECIMALS} decimal places (millionths); got {value}")
    return amount


# A price per million tokens in a request body or the config file (exact; see parse_price).
PriceAmount = Annotated[Decimal, BeforeValidator(parse_price)]
