"""`gatehouse prices ...`: the price table (per million tokens, in PRICE_CURRENCY), its history, and changes to it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import typer
from rich.table import Table

from gatehouse.cli.common import CLI_ACTOR, console, db_session, err_console, load_settings, run, session_and_bus
from gatehouse.db.base import utcnow
from gatehouse.fields import parse_price
from gatehouse.limits.prices import service
from gatehouse.limits.prices.money import decimal_of_micros
from gatehouse.limits.prices.table import PriceVersion

app = typer.Typer(no_args_is_help=True, help="Model prices: what requests cost, versioned.")


def _amount(value: str, option: str) -> Decimal:
    try:
        return parse_price(value)
    except ValueError as exc:
        err_console.print(f"[red]{option} {exc}[/red]", highlight=False)
        raise typer.Exit(2) from exc


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        err_console.print(f"[red]--from must be an ISO 8601 time (2027-01-01T00:00Z), got {value!r}[/red]")
        raise typer.Exit(2) from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _price_text(version: PriceVersion | None) -> tuple[str, str, str]:
    price = version.price if version is not None else None
    if price is None:
        return "-", "-", "-"
    return (
        str(decimal_of_micros(price.input_micros)),
        str(decimal_of_micros(price.output_micros)),
        str(decimal_of_micros(price.cached_input_micros)),
    )


def _time(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def _describe(version: PriceVersion, currency: str) -> str:
    if version.price is None:
        return f"{version.model}: no price from {_time(version.effective_from)}"
    given, made, cached = _price_text(version)
    return (
        f"{version.model}: input {given}, output {made}, cached input {cached} {currency} per million tokens, "
        f"from {_time(version.effective_from)}"
    )


@app.command("list")
def list_prices() -> None:
    """List the price in force of every priced model and `*` pattern, and the changes scheduled."""
    settings = load_settings()

    async def go() -> list[service.PriceListing]:
        async with db_session(settings) as session:
            table = await service.table_from(session, currency=settings.price_currency)
            return service.listing(table, now=utcnow())

    lines = run(go, settings)
    table = Table(title=f"Prices per million tokens, in {settings.price_currency}")
    table.add_column("model", no_wrap=True)
    for column in ("input", "output", "cached input"):
        table.add_column(column, justify="right")
    for column in ("since", "source", "scheduled"):
        table.add_column(column)
    for line in lines:
        given, made, cached = _price_text(line.current)
        scheduled = _describe(line.scheduled, settings.price_currency) if line.scheduled is not None else ""
        table.add_row(
            line.model,
            given,
            made,
            cached,
            _time(line.current.effective_from) if line.current else "-",
            line.current.source if line.current else "-",
            scheduled,
        )
    console.print(table if lines else "No prices: every request costs 0.")
    console.print(
        "Models served without a price (they cost 0) are listed by GET /admin/prices on a running server.",
        soft_wrap=True,
    )


@app.command()
def history(
    model: str | None = typer.Argument(None, help="Only this model or `*` pattern."),
    limit: int = typer.Option(100, min=1, help="At most this many versions, the latest to take effect first."),
) -> None:
    """Show every version of the prices (of one model), the latest to take effect first."""
    settings = load_settings()

    async def go() -> list[PriceVersion]:
        async with db_session(settings) as session:
            return [PriceVersion.of(row) for row in await service.history(session, model=model, limit=limit)]

    versions = run(go, settings)
    table = Table(title=f"Price history per million tokens, in {settings.price_currency}")
    for column in ("id", "model", "input", "output", "cached input", "from", "source", "by"):
        table.add_column(column, no_wrap=column in ("model", "from"))
    for version in versions:
        given, made, cached = _price_text(version) if version.price else ("removed", "", "")
        by = str(version.created_by) if version.created_by is not None else "cli/config"
        table.add_row(
            str(version.id), version.model, given, made, cached, _time(version.effective_from), version.source, by
        )
    console.print(table if versions else "No price has ever been set.")


@app.command("set")
def set_price(
    model: str = typer.Argument(..., help="A model name as clients use it, or a `*` pattern (`llama*`)."),
    input: str = typer.Option(..., "--input", help="Price per million prompt tokens, e.g. 2.5."),
    output: str = typer.Option(..., "--output", help="Price per million completion tokens."),
    cached_input: str | None = typer.Option(
        None, "--cached-input", help="Per million prompt tokens read from a prompt cache (default: --input)."
    ),
    effective_from: str | None = typer.Option(
        None, "--from", help="When it takes effect, ISO 8601 (UTC unless it says): now (default) or later."
    ),
    currency: str | None = typer.Option(None, help="PRICE_CURRENCY, if you name it: another is refused."),
) -> None:
    """Set a model's price from now (or --from) on: a new version, audited; past requests keep their cost."""
    settings = load_settings()
    price = service.price_of(
        _amount(input, "--input"),
        _amount(output, "--output"),
        _amount(cached_input, "--cached-input") if cached_input is not None else None,
    )
    when = _when(effective_from)

    async def go() -> tuple[PriceVersion, bool]:
        async with session_and_bus(settings) as (session, bus):
            return await service.set_price(
                session,
                bus=bus,
                model=model,
                price=price,
                currency=settings.price_currency,
                given_currency=currency,
                effective_from=when,
                actor=CLI_ACTOR,
            )

    version, changed = run(go, settings)
    said = _describe(version, settings.price_currency)
    console.print(f"set {said}" if changed else f"unchanged: {said}", highlight=False, soft_wrap=True)


@app.command()
def remove(
    model: str = typer.Argument(..., help="The model name or `*` pattern whose price to remove."),
    effective_from: str | None = typer.Option(None, "--from", help="When, ISO 8601: now (default) or later."),
) -> None:
    """Remove a model's price from now (or --from) on: its requests then cost 0 and are flagged unpriced."""
    settings = load_settings()
    when = _when(effective_from)

    async def go() -> PriceVersion:
        async with session_and_bus(settings) as (session, bus):
            return await service.remove_price(
                session, bus=bus, model=model, currency=settings.price_currency, effective_from=when, actor=CLI_ACTOR
            )

    version = run(go, settings)
    console.print(f"removed the price of {version.model} from {_time(version.effective_from)}", highlight=False)
