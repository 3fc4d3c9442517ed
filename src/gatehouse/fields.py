"""Field types shared by every domain's request schemas and routes."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BeforeValidator

MAX_DB_INT = 2**31 - 1  # INTEGER on SQLite and PostgreSQL alike (int4); larger ids cannot exist


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here, a 422 naming the field, not a 500 at the INSERT.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A client-supplied string that may reach the database.
Text = Annotated[str, AfterValidator(_no_nul)]

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
