"""Changing the price table: each change is a new version (rows are never updated), audited with the price it
replaces, and announced to every replica after its commit (Signal.PRICES_CHANGED)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.base import utcnow
from gatehouse.db.session import signal_after_commit
from gatehouse.errors import BadRequest
from gatehouse.limits.models import ModelPrice
from gatehouse.limits.prices.errors import CurrencyMismatch, EffectiveFromInPast, PriceNotFound
from gatehouse.limits.prices.events import PriceDetails, PriceRemovedEvent, PriceSetEvent
from gatehouse.limits.prices.money import decimal_of_micros, micros_of
from gatehouse.limits.prices.table import Price, PriceTable, PriceVersion, is_pattern

MAX_NAME = 200  # model_price.model
# A change "from now" sent by a client whose clock or network lags a little is taken as from now; earlier than
# this is refused (requests served meanwhile were charged the price then in force).
PAST_GRACE = timedelta(seconds=60)
MAX_AHEAD = timedelta(days=3650)  # a change scheduled further ahead is surely a typo (and year 9999 would overflow)
# Serializes price changes on PostgreSQL (each reads the version it replaces, then adds one); SQLite's writes are
# serialized already (BEGIN IMMEDIATE).
PRICES_LOCK_ID = 0x6761746570726963  # "gatepric"


@dataclass(frozen=True)
class ServedModels:
    """The model names clients can use now, as the composition root hands them over (the upstream registry's
    list: limits does not import upstreams)."""

    names: Callable[[], Iterable[str]]


@dataclass(frozen=True)
class PriceListing:
    """One line of the price list: a name priced now, or a model clients can use that nothing prices."""

    model: str
    current: PriceVersion | None  # the version in force (None: unpriced)
    scheduled: PriceVersion | None  # the next version of this name, when one is scheduled


def details_of(price: Price | None) -> PriceDetails:
    """A price as the audit log keeps it: exact decimal strings per million tokens."""
    if price is None:
        return None
    return {
        "input": str(decimal_of_micros(price.input_micros)),
        "output": str(decimal_of_micros(price.output_micros)),
        "cached_input": str(decimal_of_micros(price.cached_input_micros)),
    }


def check_name(model: str) -> str:
    """A price's name: a model name as clients send it, or a `*` pattern; 400 naming `model` else."""
    if not model or model != model.strip():
        raise BadRequest("The model name must not be empty or start or end with spaces.", param="model")
    if len(model) > MAX_NAME or "\x00" in model:
        raise BadRequest(f"The model name must be at most {MAX_NAME} characters, without NUL.", param="model")
    return model


def check_currency(given: str | None, currency: str) -> str:
    """The price's currency: PRICE_CURRENCY, whether named or not; 400 `currency_mismatch` for another."""
    if given is not None and given.strip().upper() != currency:
        raise CurrencyMismatch(
            f"Prices are in {currency} (PRICE_CURRENCY), and Gatehouse has no exchange rates: give the price in "
            f"{currency}, or leave `currency` out.",
            param="currency",
        )
    return currency


def effective_time(effective_from: datetime | None, now: datetime) -> datetime:
    """When a change takes effect: now by default; a time in the past is refused (400 naming effective_from)."""
    if effective_from is None:
        return now.astimezone(UTC)
    if effective_from < now - PAST_GRACE:
        raise EffectiveFromInPast(
            f"effective_from {effective_from.isoformat()} is in the past: a price applies from now or later "
            "(requests already served keep their cost). Leave it out for now.",
            param="effective_from",
        )
    if effective_from > now + MAX_AHEAD:
        raise BadRequest(
            f"effective_from {effective_from.isoformat()} is more than 10 years ahead: give a nearer time.",
            param="effective_from",
        )
    return max(effective_from, now).astimezone(UTC)


async def lock_prices(session: AsyncSession) -> None:
    """Hold the price table's lock until this transaction ends (PostgreSQL; SQLite's writer holds it already)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": PRICES_LOCK_ID})


async def version_in_force(session: AsyncSession, *, model: str, at: datetime) -> ModelPrice | None:
    """The stored version of exactly this name in force at `at` (a removal too), from the database."""
    query = (
        select(ModelPrice)
        .where(ModelPrice.model == model, ModelPrice.effective_from <= at)
        .order_by(ModelPrice.effective_from.desc(), ModelPrice.id.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalars().first()


async def add_version(
    session: AsyncSession,
    *,
    bus: EventBus | None,
    model: str,
    currency: str,
    price: Price | None,
    effective_from: datetime,
    source: str,
    actor: Actor,
    before: ModelPrice | None,
) -> PriceVersion:
    """Store one version (after `lock_prices`), audit it with the version it replaces (`before`), and tell every
    replica once committed."""
    row = ModelPrice(
        model=model,
        currency=currency,
        input_micros=price.input_micros if price else None,
        output_micros=price.output_micros if price else None,
        cached_input_micros=price.cached_input_micros if price else None,
        effective_from=effective_from,
        source=source,
        created_by=actor.user_id,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    old = details_of(PriceVersion.of(before).price) if before is not None else None
    if price is None:
        removed = PriceRemovedEvent(
            model=model,
            version_id=row.id,
            currency=currency,
            before=old,
            effective_from=effective_from,
            source=source,
        )
        await record(session, removed, actor=actor)
    else:
        event = PriceSetEvent(
            model=model,
            version_id=row.id,
            currency=currency,
            before=old,
            after=details_of(price),
            effective_from=effective_from,
            source=source,
        )
        await record(session, event, actor=actor)
    if bus is not None:
        signal_after_commit(session, bus, Signal.PRICES_CHANGED, {"model": model})
    return PriceVersion.of(row)


def price_of(input: Decimal, output: Decimal, cached_input: Decimal | None) -> Price:
    """Exact amounts per million tokens (already checked: gatehouse.fields.parse_price) in millionths; the cached
    input price defaults to the input price."""
    return Price(micros_of(input), micros_of(output), micros_of(cached_input if cached_input is not None else input))


async def set_price(
    session: AsyncSession,
    *,
    bus: EventBus | None,
    model: str,
    price: Price,
    currency: str,
    actor: Actor,
    effective_from: datetime | None = None,
    given_currency: str | None = None,
    source: str = "api",
) -> tuple[PriceVersion, bool]:
    """Price `model` (a name or a `*` pattern) from `effective_from` (default now) on, in the caller's transaction,
    audited. Returns the version in force then and whether it is new (a price equal to the one in force then
    adds nothing)."""
    check_name(model)
    check_currency(given_currency, currency)
    when = effective_time(effective_from, utcnow())
    await lock_prices(session)
    before = await version_in_force(session, model=model, at=when)
    if before is not None and before.currency == currency and PriceVersion.of(before).price == price:
        return PriceVersion.of(before), False
    version = await add_version(
        session,
        bus=bus,
        model=model,
        currency=currency,
        price=price,
        effective_from=when,
        source=source,
        actor=actor,
        before=before,
    )
    return version, True


async def remove_price(
    session: AsyncSession,
    *,
    bus: EventBus | None,
    model: str,
    currency: str,
    actor: Actor,
    effective_from: datetime | None = None,
    source: str = "api",
) -> PriceVersion:
    """Remove `model`'s price from `effective_from` (default now) on: a version without prices, audited; 404
    when this name has no price in force then."""
    check_name(model)
    when = effective_time(effective_from, utcnow())
    await lock_prices(session)
    before = await version_in_force(session, model=model, at=when)
    if before is None or before.currency != currency or PriceVersion.of(before).price is None:
        raise PriceNotFound(
            f"No price for `{model}` is in force then: nothing to remove. GET /admin/prices lists the prices.",
            param="model",
        )
    return await add_version(
        session,
        bus=bus,
        model=model,
        currency=currency,
        price=None,
        effective_from=when,
        source=source,
        actor=actor,
        before=before,
    )


async def history(
    session: AsyncSession, *, model: str | None = None, before_id: int | None = None, limit: int = 100
) -> Sequence[ModelPrice]:
    """Every version (of one name, or of all), newest effect first, after the cursor `before_id` (the last id of
    the previous page)."""
    query = select(ModelPrice)
    if model is not None:
        query = query.where(ModelPrice.model == model)
    if before_id is not None:
        last = await session.get(ModelPrice, before_id)
        if last is not None:
            query = query.where(
                or_(
                    ModelPrice.effective_from < last.effective_from,
                    (ModelPrice.effective_from == last.effective_from) & (ModelPrice.id < last.id),
                )
            )
        else:
            query = query.where(ModelPrice.id < before_id)
    query = query.order_by(ModelPrice.effective_from.desc(), ModelPrice.id.desc()).limit(limit)
    return (await session.execute(query)).scalars().all()


async def table_from(session: AsyncSession, *, currency: str) -> PriceTable:
    """The whole table, read in this session (for the CLI, which keeps none in memory)."""
    table = PriceTable(currency=currency)
    table.load(PriceVersion.of(row) for row in (await session.execute(select(ModelPrice))).scalars())
    return table


def listing(table: PriceTable, *, now: datetime, served: Iterable[str] = ()) -> list[PriceListing]:
    """Every name priced now (models and patterns), then every model clients can use that nothing prices now,
    each with its next scheduled version."""
    moment = now.timestamp()
    found: list[PriceListing] = []
    listed: set[str] = set()
    for name in table.names():
        current = table.version_of(name, moment)
        scheduled = table.next_version_of(name, moment)
        if current is not None and current.price is not None:
            found.append(PriceListing(name, current, scheduled))
            listed.add(name)
        elif scheduled is not None and scheduled.price is not None:
            found.append(PriceListing(name, None, scheduled))
            listed.add(name)
    for model in sorted(set(served)):
        if model not in listed and not is_pattern(model) and table.price_at(model, moment) is None:
            found.append(PriceListing(model, None, None))
    return found
