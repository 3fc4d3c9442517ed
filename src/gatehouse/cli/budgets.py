"""`gatehouse budgets ...`: quotas and spend limits of users, groups and keys (per day and per month) from the shell,
and the state of their budgets."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.budgets import service
from gatehouse.accounts.users import service as users
from gatehouse.auth.models import Group
from gatehouse.cli.common import CLI_ACTOR, console, db_session, load_settings, run, session_and_bus
from gatehouse.errors import NotFound
from gatehouse.limits.budget_schemas import LIMIT_FIELDS, BudgetState, LimitsRead, LimitsUpdate

app = typer.Typer(no_args_is_help=True, help="Budgets: quotas and spend limits of users, groups and keys.")


async def _subject(session: AsyncSession, user: str | None, group: str | None, key: int | None) -> tuple[str, int]:
    if user is not None:
        found = (
            await users.get_or_raise(session, user_id=int(user))
            if user.isdigit()
            else await users.get_by_email_or_raise(session, email=user)
        )
        return "user", found.id
    if group is not None:
        row = await session.get(Group, int(group)) if group.isdigit() else None
        if row is None:
            row = (await session.execute(select(Group).where(Group.name == group))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"No group {group!r}: list them with `gatehouse groups list`.")
        return "group", row.id
    if key is None:
        raise NotFound("Give --user, --group or --key.")
    return "key", key


def _one(user: str | None, group: str | None, key: int | None) -> None:
    if sum(x is not None for x in (user, group, key)) != 1:
        console.print("[red]Give exactly one of --user, --group and --key: whose budgets.[/red]")
        raise typer.Exit(2)


USER = typer.Option(None, "--user", help="A user: an email or an id.")
GROUP = typer.Option(None, "--group", help="A group: a name or an id.")
KEY = typer.Option(None, "--key", min=1, help="An API key's id.")


@app.command("set")
def set_limits(
    user: str | None = USER,
    group: str | None = GROUP,
    key: int | None = KEY,
    messages_per_day: int | None = typer.Option(None, min=0),
    tokens_per_day: int | None = typer.Option(None, min=0),
    spend_per_day: str | None = typer.Option(None, help="In PRICE_CURRENCY, e.g. 5 or 2.50."),
    messages_per_month: int | None = typer.Option(None, min=0),
    tokens_per_month: int | None = typer.Option(None, min=0),
    spend_per_month: str | None = typer.Option(None, help="In PRICE_CURRENCY, e.g. 200."),
    clear: list[str] = typer.Option([], "--clear", help="Lift this limit (repeatable), e.g. --clear spend_per_day."),
) -> None:
    """Set (or, with --clear, lift) a user's, group's or key's quotas and spend limits; the others stay."""
    _one(user, group, key)
    given: dict[str, Any] = {
        name: value
        for name, value in (
            ("messages_per_day", messages_per_day),
            ("tokens_per_day", tokens_per_day),
            ("spend_per_day", spend_per_day),
            ("messages_per_month", messages_per_month),
            ("tokens_per_month", tokens_per_month),
            ("spend_per_month", spend_per_month),
        )
        if value is not None
    }
    for name in clear:
        if name not in LIMIT_FIELDS:
            console.print(f"[red]--clear {name}: not a limit; one of {', '.join(LIMIT_FIELDS)}.[/red]")
            raise typer.Exit(2)
        given[name] = None
    if not given:
        console.print("[red]Nothing to change: give a limit (e.g. --spend-per-month 200) or --clear.[/red]")
        raise typer.Exit(2)
    try:
        update = LimitsUpdate.model_validate(given)
    except ValidationError as exc:
        problem = exc.errors()[0]
        console.print(f"[red]--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}[/red]")
        raise typer.Exit(2) from exc
    settings = load_settings()

    async def go() -> tuple[str, int, LimitsRead]:
        async with session_and_bus(settings) as (session, bus):
            scope, subject_id = await _subject(session, user, group, key)
            row = await service.set_limits(
                session,
                bus=bus,
                actor=CLI_ACTOR,
                actor_role=None,
                scope=scope,  # type: ignore[arg-type]
                subject_id=subject_id,
                update=update,
            )
            return scope, subject_id, LimitsRead.of(row, settings.price_currency)

    scope, subject_id, limits = run(go, settings)
    console.print(f"{scope} {subject_id}: limits now", highlight=False)
    for name in LIMIT_FIELDS:
        value = getattr(limits, name)
        shown = "none" if value is None else f"{value} {limits.currency}" if name.startswith("spend") else value
        typer.echo(f"  {name}\t{shown}")
    if not settings.redis_url:
        console.print("running servers without REDIS_URL read it within a second")


@app.command("show")
def show(user: str | None = USER, group: str | None = GROUP, key: int | None = KEY) -> None:
    """The state of a user's, group's or key's budgets: used, held by requests in progress, limit, percent, reset."""
    _one(user, group, key)
    settings = load_settings()

    async def go() -> list[BudgetState]:
        async with db_session(settings) as session:
            scope, subject_id = await _subject(session, user, group, key)
            subject = await service.subject(session, scope, subject_id)  # type: ignore[arg-type]
            return await service.budget_states(
                session, [subject], timezone=settings.quota_timezone, currency=settings.price_currency
            )

    for state in run(go, settings):
        resets = f"{state.resets_at:%Y-%m-%d %H:%M} UTC"
        typer.echo(f"{state.scope} {state.name}: {state.period} from {state.start}, resets {resets}")
        for measure in ("messages", "tokens", "spend"):
            m = getattr(state, measure)
            unit = f" {state.currency}" if measure == "spend" else ""
            limit = "no limit" if m.limit is None else f"of {m.limit}{unit} ({m.percent}%)"
            typer.echo(f"  {measure}\t{m.used}{unit} used, {m.held}{unit} held, {limit}")
