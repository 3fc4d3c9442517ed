"""Routes: /admin/prices (the price table now, its history, a new price, a removal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.db.base import utcnow
from gatehouse.deps import ActorDep, BusDep, SessionDep, SettingsDep
from gatehouse.errors import errors
from gatehouse.limits.prices import service
from gatehouse.limits.prices.errors import CurrencyMismatch, EffectiveFromInPast, PriceNotFound
from gatehouse.limits.prices.schemas import PriceHistoryPage, PriceList, PriceRead, PriceUpdate, PriceVersionRead
from gatehouse.limits.prices.table import PriceTable, PriceVersion

router = APIRouter(prefix="/admin/prices", tags=["prices"])
TableDep = Annotated[PriceTable, provided(PriceTable)]
ServedDep = Annotated[service.ServedModels, provided(service.ServedModels)]
MAX_ID = 2**31 - 1
# A model name may hold slashes (`openai/gpt-4o-mini`), hence a path parameter that takes the rest of the path.
# No control characters: the path's route does not match a line break, so the document must not offer one.
ModelPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=service.MAX_NAME,
        pattern=r"^[^\u0000-\u001f\u007f]+$",
        description="A model name or `*` pattern.",
    ),
]


@router.get("", response_model=PriceList, dependencies=[require(Role.MONITOR)])
async def list_prices(table: TableDep, served: ServedDep, settings: SettingsDep) -> PriceList:
    """The price in force of every priced model and pattern, and the models clients can use that have no price
    (`priced: false`: they cost 0)."""
    lines = service.listing(table, now=utcnow(), served=served.names())
    return PriceList(currency=settings.price_currency, items=[PriceRead.of(line) for line in lines])


@router.get("/history", response_model=PriceHistoryPage, dependencies=[require(Role.MONITOR)])
async def price_history(
    session: SessionDep,
    model: Annotated[str | None, Query(min_length=1, max_length=service.MAX_NAME, description="Only this one.")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="The previous page's `next_cursor`.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> PriceHistoryPage:
    """Every version, the latest to take effect first."""
    rows = await service.history(session, model=model, before_id=before, limit=limit + 1)
    page = [PriceVersionRead.of(PriceVersion.of(row)) for row in rows[:limit]]
    return PriceHistoryPage(items=page, next_cursor=page[-1].id if len(rows) > limit else None)


@router.put(
    "/{model:path}",
    responses=errors(CurrencyMismatch, EffectiveFromInPast),
    response_model=PriceVersionRead,
    dependencies=[require(Role.ADMIN)],
)
async def put_price(
    model: ModelPath, body: PriceUpdate, session: SessionDep, settings: SettingsDep, bus: BusDep, actor: ActorDep
) -> PriceVersionRead:
    """A new version of a model's (or pattern's) price, from `effective_from` (default now) on; audited. The same
    price as the one in force then adds nothing and answers that version."""
    version, _ = await service.set_price(
        session,
        bus=bus,
        model=model,
        price=service.price_of(body.input, body.output, body.cached_input),
        currency=settings.price_currency,
        given_currency=body.currency,
        effective_from=body.effective_from,
        actor=actor,
    )
    return PriceVersionRead.of(version)


@router.delete(
    "/{model:path}",
    responses=errors(PriceNotFound, EffectiveFromInPast),
    response_model=PriceVersionRead,
    dependencies=[require(Role.ADMIN)],
)
async def delete_price(
    model: ModelPath,
    session: SessionDep,
    settings: SettingsDep,
    bus: BusDep,
    actor: ActorDep,
    effective_from: Annotated[
        AwareDatetime | None, Query(description="When the removal takes effect: now (default) or later.")
    ] = None,
) -> PriceVersionRead:
    """Remove a model's (or pattern's) price: a version without prices, audited; its requests then cost 0 and are
    flagged unpriced (unless a pattern prices them)."""
    version = await service.remove_price(
        session, bus=bus, model=model, currency=settings.price_currency, effective_from=effective_from, actor=actor
    )
    return PriceVersionRead.of(version)
