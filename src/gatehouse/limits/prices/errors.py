"""Price table errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, NotFound


class PriceNotFound(NotFound):
    """No price of that name (a model or a `*` pattern) is in force: `GET /admin/prices` lists them."""

    code = "price_not_found"


class CurrencyMismatch(BadRequest):
    """A price in another currency than PRICE_CURRENCY: Gatehouse accounts in one currency and has no exchange
    rates."""

    code = "currency_mismatch"


class EffectiveFromInPast(BadRequest):
    """A price change may take effect now or later, never earlier: requests already served keep their cost."""

    code = "effective_from_in_past"
