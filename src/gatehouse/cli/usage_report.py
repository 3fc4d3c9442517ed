"""`gatehouse usage report`: usage and spend by user, group, key, model, upstream and surface, as a table or CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.users import service as users
from gatehouse.cli.common import console, err_console, load_settings, run
from gatehouse.db.base import utcnow
from gatehouse.db.engine import create_engine, create_sessionmaker, read_only
from gatehouse.errors import BadRequest
from gatehouse.limits.prices.money import decimal_of_nanos
from gatehouse.reports import render, service
from gatehouse.reports.query import (
    DEFAULT_LIMIT,
    DIMENSIONS,
    MAX_LIMIT,
    Filters,
    ReportQuery,
    parse_group_by,
    parse_range,
)
from gatehouse.reports.service import Measures, Report, Row
from gatehouse.settings import Settings

OPTIONS = {"group_by": "--by", "from": "--from", "to": "--to"}  # the API's parameter names, as options


@asynccontextmanager
async def _read_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A read-only transaction on a short-lived engine: on SQLite it never holds the write lock from a server."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(read_only(engine))() as session, session.begin():
            yield session
    finally:
        await engine.dispose()


def _query(
    settings: Settings, by: str, since: str | None, until: str | None, limit: int, filters: Filters
) -> ReportQuery:
    """The report's question, or the option at fault and exit 2."""
    try:
        start, end = parse_range(since, until, timezone=settings.quota_timezone, now=utcnow())
        return ReportQuery(group_by=parse_group_by([by]), start=start, end=end, filters=filters, limit=limit)
    except BadRequest as exc:
        option = OPTIONS.get(exc.param or "", exc.param)
        err_console.print(f"[red]Invalid {option}:[/red] {escape(exc.message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc


def report(
    by: str = typer.Option(
        "user", "--by", "--group-by", help=f"One or more of {', '.join(DIMENSIONS)}, comma-separated."
    ),
    since: str | None = typer.Option(
        None, "--from", help="A date (YYYY-MM-DD, in QUOTA_TIMEZONE) or an ISO datetime; default: this month."
    ),
    until: str | None = typer.Option(
        None, "--to", help="A date (included) or an ISO datetime (excluded); default: the end of this month."
    ),
    user: str | None = typer.Option(None, "--user", help="Only this user's requests (email or id)."),
    group_id: int | None = typer.Option(None, "--group", help="Only the requests of this group (id).", min=1),
    key_id: int | None = typer.Option(None, "--key", help="Only this key's requests (id).", min=1),
    model: str | None = typer.Option(None, "--model", help="Only this model's requests."),
    upstream: str | None = typer.Option(None, "--upstream", help="Only this upstream's requests."),
    surface: str | None = typer.Option(None, "--surface", help="Only this client surface's requests."),
    limit: int = typer.Option(
        DEFAULT_LIMIT, "--limit", min=1, max=MAX_LIMIT, help="At most this many rows; the rest summed in one."
    ),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout instead of a table."),
) -> None:
    """Usage and spend over a range (default: this month), by user, group, key, model, upstream or surface, or a
    combination: requests, errors, tokens, cost and unpriced requests, with totals; sorted by cost then requests.
    A request belongs to its key's group, else to every group its user is a member of now."""
    settings = load_settings()
    filters = Filters(group_id=group_id, key_id=key_id, model=model, upstream=upstream, surface=surface)
    query = _query(settings, by=by, since=since, until=until, limit=limit, filters=filters)

    async def go() -> Report:
        async with _read_session(settings) as session:
            wanted = query
            if user is not None:
                found = (
                    await users.get_or_raise(session, user_id=int(user))
                    if user.strip().isdigit()
                    else await users.get_by_email_or_raise(session, email=user)
                )
                wanted = replace(query, filters=replace(filters, user_id=found.id))
            return await service.report(session, query=wanted)

    result = run(go, settings)
    if as_csv:
        typer.echo(render.to_csv(result, currency=settings.price_currency), nl=False)
        return
    table = _table(result, settings)
    # A number cut short is a wrong number: in a narrow terminal the table is printed wider, and lines wrap.
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if natural > console.width:
        table.width = natural
    console.print(table, crop=False)


def _table(result: Report, settings: Settings) -> Table:
    query = result.query
    table = Table(
        title=f"Usage {_span(query.start, query.end, settings.quota_timezone)}, by {', '.join(query.group_by)}",
        box=box.SIMPLE_HEAD,
        caption="a user's requests count in each of their groups: the rows may add up to more than the total"
        if query.rows_may_overlap
        else None,
    )
    for dimension in query.group_by:
        table.add_column(dimension, no_wrap=True)  # an email or a key cut in two is one nobody can copy
    for column in ("requests", "errors", "prompt tokens", "completion tokens", f"cost ({settings.price_currency})"):
        table.add_column(column, justify="right")
    table.add_column("unpriced", justify="right")  # requests of models without a price: they cost 0
    for row in result.rows:
        table.add_row(*(_named(dimension, row) for dimension in query.group_by), *_measures(row.measures))
    blank = [""] * (len(query.group_by) - 1)
    if result.other is not None:
        table.add_row(f"other ({result.other_rows})", *blank, *_measures(result.other), style="dim")
    table.add_section()
    table.add_row("total", *blank, *_measures(result.totals), style="bold")
    return table


def _span(start: datetime, end: datetime, timezone: str) -> str:
    """The range as people say it: whole days as dates (the last one included), else from a time until another."""
    zone = ZoneInfo(timezone)
    first, after = start.astimezone(zone), end.astimezone(zone)
    if first.time() == after.time() == time(0):
        return f"{first.date()} to {(after - timedelta(days=1)).date()} ({timezone})"
    return f"from {first:%Y-%m-%d %H:%M} until {after:%Y-%m-%d %H:%M} ({timezone})"


def _named(dimension: str, row: Row) -> str:
    """How a row's value of a dimension reads: an email, a group's name, a key's name and prefix, a model."""
    labels = row.labels
    if dimension == "user":
        user_id, email = labels["user_id"], labels["user_email"]
        return "-" if user_id is None else escape(email or f"user {user_id} (deleted)")
    if dimension == "group":
        group_id, name = labels["group_id"], labels["group_name"]
        return "(no group)" if group_id is None else escape(name or f"group {group_id} (deleted)")
    if dimension == "key":
        key_id, name, prefix = labels["key_id"], labels["key_name"], labels["key_prefix"]
        if key_id is None:
            return "-"
        return escape(f"{name} ({prefix})") if name is not None else f"key {key_id} (deleted)"
    value = labels[dimension]
    return "-" if value is None else escape(str(value))


def _measures(measures: Measures) -> list[str]:
    return [
        str(measures.requests),
        str(measures.errors),
        str(measures.prompt_tokens),
        str(measures.completion_tokens),
        f"{decimal_of_nanos(measures.cost_nanos):f}",
        str(measures.unpriced_requests),
    ]
