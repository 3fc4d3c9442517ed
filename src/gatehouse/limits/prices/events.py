"""The audit events of the price table (docs/audit.md). Prices in details are decimal strings per million tokens
(exact), `null` where there was none."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatehouse.audit.events import Event

PriceDetails = dict[str, str] | None  # {"input", "output", "cached_input"} per million tokens, or None: no price


class _PriceEvent(Event):
    target_type = "price"
    target = "model"
    model: str  # a model name or a `*` pattern


class PriceSetEvent(_PriceEvent):
    """A new version of a model's price: the one it replaces (`before`, the version in force at `effective_from`;
    null: none) and the new one, from the API, the CLI or GATEHOUSE_CONFIG (`source`)."""

    action = "price.set"
    version_id: int
    currency: str
    before: PriceDetails
    after: PriceDetails
    effective_from: datetime
    source: str


class PriceRemovedEvent(_PriceEvent):
    """A version that removes a model's price from `effective_from` on (requests then cost 0 and are flagged
    unpriced, unless a `*` pattern prices the model)."""

    action = "price.removed"
    version_id: int
    currency: str
    before: PriceDetails
    effective_from: datetime
    source: str

    def details(self) -> dict[str, Any]:
        return {**super().details(), "after": None}
