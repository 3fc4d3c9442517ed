"""Exact amounts of money: prices in millionths of the currency per million tokens, costs in billionths, as
integers; decimals only at the edges (what people type and read)."""

from __future__ import annotations

from decimal import Decimal


def micros_of(amount: Decimal) -> int:
    """An exact price (at most 6 decimal places: gatehouse.fields.parse_price) in millionths."""
    return int(amount.scaleb(6))


def decimal_of_micros(micros: int) -> Decimal:
    """Millionths of the currency as a decimal amount (2500000 -> 2.5)."""
    return _plain(Decimal(micros).scaleb(-6))


def decimal_of_nanos(nanos: int) -> Decimal:
    """Billionths of the currency as a decimal amount (1500 -> 0.0000015)."""
    return _plain(Decimal(nanos).scaleb(-9))


def _plain(amount: Decimal) -> Decimal:
    """Without trailing zeros, and a whole amount without an exponent (10, not 1E+1)."""
    normal = amount.normalize()
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


def json_number(amount: Decimal) -> int | float:
    """A decimal amount as a JSON number: exact for up to 15 significant digits (any price, any realistic cost)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)
