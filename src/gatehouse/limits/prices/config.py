"""GATEHOUSE_CONFIG's `prices:` applied to the price table, at start.

The file and the API share the table by one rule: the file's value for a model (a price, or none once the file no
longer lists a model it priced) is applied when it differs from the last value the file applied, as a version with
source `config`. So a restart with the same file adds nothing, a price set through the API stands until the file's
value for that model changes, and editing the file is how the file takes a model back.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.db.session import transaction
from gatehouse.limits.models import ModelPrice
from gatehouse.limits.prices.service import add_version, check_name, lock_prices, price_of, version_in_force
from gatehouse.limits.prices.table import Price, PriceVersion

log = get_logger("gatehouse.prices")
CONFIG_ACTOR = Actor.system("GATEHOUSE_CONFIG")
SOURCE = "config"


class ConfiguredPrice(Protocol):
    """One entry of the file's `prices:` (upstreams/config.py PriceConfig), exact amounts per million tokens."""

    @property
    def input(self) -> Decimal: ...

    @property
    def output(self) -> Decimal: ...

    @property
    def cached_input(self) -> Decimal | None: ...


async def _last_applied(session: AsyncSession) -> dict[str, PriceVersion]:
    """Per name, the last version the file applied."""
    rows = await session.execute(select(ModelPrice).where(ModelPrice.source == SOURCE).order_by(ModelPrice.id))
    return {row.model: PriceVersion.of(row) for row in rows.scalars()}


async def apply_config(
    sessionmaker: async_sessionmaker[AsyncSession],
    prices: Mapping[str, ConfiguredPrice],
    *,
    currency: str,
    bus: EventBus | None = None,
) -> list[str]:
    """Add a `config` version for each name whose value in the file differs from the last one the file applied
    (audited as GATEHOUSE_CONFIG); returns the names changed."""
    wanted: dict[str, Price | None] = {
        check_name(model): price_of(entry.input, entry.output, entry.cached_input) for model, entry in prices.items()
    }
    changed: list[str] = []
    async with transaction(sessionmaker) as session:
        await lock_prices(session)
        applied = await _last_applied(session)
        for model, version in applied.items():
            if model not in wanted and version.price is not None:
                wanted[model] = None  # the file priced it and no longer does
        now = utcnow()
        for model, price in sorted(wanted.items()):
            last = applied.get(model)
            if last is not None and last.currency == currency and last.price == price:
                continue
            before = await version_in_force(session, model=model, at=now)
            await add_version(
                session,
                bus=bus,
                model=model,
                currency=currency,
                price=price,
                effective_from=now,
                source=SOURCE,
                actor=CONFIG_ACTOR,
                before=before,
            )
            changed.append(model)
    if changed:
        log.info("prices_applied_from_config", models=changed)
    return changed
