"""`gatehouse usage ...`: daily quota usage, and the repair for a corrupted day."""

from __future__ import annotations

from datetime import date

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.users import service as users
from gatehouse.auth.errors import UserNotFound
from gatehouse.cli.common import console, db_session, err_console, load_settings, run
from gatehouse.cli.usage_report import report
from gatehouse.gateway.spend import spend_by_user
from gatehouse.limits import quotas, usage
from gatehouse.limits.prices.money import decimal_of_nanos

app = typer.Typer(no_args_is_help=True, help="Daily usage against quotas; usage and spend reports.")


def _parse_day(value: str | None, timezone: str) -> date:
    if value is None:
        return quotas.quota_day(timezone)
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        err_console.print(f"[red]--date must be YYYY-MM-DD, got {value!r}[/red]")
        raise typer.Exit(2) from exc


async def _user_id(session: AsyncSession, email: str | None) -> int | None:
    if email is None:
        return None
    user = await users.get_by_email(session, email=email)
    if user is None:
        raise UserNotFound(f"No user with email {email}.")
    return user.id


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


@app.command()
def show(
    user: str | None = typer.Option(None, "--user", help="Only this user (email)."),
    day: str | None = typer.Option(None, "--date", help="The quota day, YYYY-MM-DD (default: today)."),
) -> None:
    """Show usage per user for one day, with quotas and percentages, and what it cost (settled requests)."""
    settings = load_settings()
    target = _parse_day(day, settings.quota_timezone)

    async def go() -> list[usage.UsageRow]:
        async with db_session(settings) as session:
            user_id = await _user_id(session, user)
            rows = await usage.list_usage(session, start=target, end=target, user_id=user_id)
            return await usage.with_spend(
                session, rows, spend=spend_by_user, timezone=settings.quota_timezone, user_id=user_id
            )

    rows = run(go, settings)
    table = Table(title=f"Usage on {target.isoformat()} ({settings.quota_timezone})")
    table.add_column("user", no_wrap=True)  # an email cut in two is an email nobody can copy
    for column in ("messages", "of", "%", "tokens", "of", "%", "in flight", f"spend ({settings.price_currency})"):
        table.add_column(column, justify="right")
    table.add_column("unpriced", justify="right")  # requests for models without a price (they cost 0)
    for row in rows:
        table.add_row(
            row.email,
            str(row.messages),
            _limit(row.messages_per_day),
            str(row.messages_percent or "-"),
            str(row.tokens),
            _limit(row.tokens_per_day),
            str(row.tokens_percent or "-"),
            str(row.reserved_tokens),
            f"{decimal_of_nanos(row.spend_nanos):f}",
            str(row.unpriced_requests),
        )
    console.print(table if rows else f"No usage recorded on {target.isoformat()}.")


@app.command()
def reset(
    day: str = typer.Option(..., "--date", help="The quota day to reset, YYYY-MM-DD."),
    user: str | None = typer.Option(None, "--user", help="Only this user (email); default: everyone."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Zero the usage counters of a day (the repair for a corrupted day); the request log is kept."""
    settings = load_settings()
    target = _parse_day(day, settings.quota_timezone)
    who = user or "every user"
    if not yes and not typer.confirm(f"Reset usage of {who} on {target.isoformat()}?"):
        raise typer.Exit(1)

    async def go() -> int:
        async with db_session(settings) as session:
            return await usage.reset_usage(session, day=target, user_id=await _user_id(session, user))

    count = run(go, settings)
    console.print(f"reset {count} counter(s) for {who} on {target.isoformat()}")


app.command()(report)  # cli/usage_report.py
