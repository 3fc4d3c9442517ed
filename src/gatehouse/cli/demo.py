"""`gatehouse demo ...`: demo data for a fresh installation (a trial, a training, screenshots): seed, reset."""

from __future__ import annotations

import typer
from rich.table import Table

from gatehouse.cli.common import console, quiet_settings, run
from gatehouse.demo import service
from gatehouse.demo.plan import DOMAIN
from gatehouse.demo.service import DemoReport

app = typer.Typer(
    no_args_is_help=True,
    help=f"Demo data: sample people (@{DOMAIN}), groups, keys, invites and traffic through the demo model.",
)
FORCE_HELP = "Also where ENVIRONMENT=prod, or (seed) on a database that holds more than the bootstrap administrator."


@app.command("seed")
def seed(force: bool = typer.Option(False, "--force", help=FORCE_HELP)) -> None:
    """Seed a fresh database: people of every role with passwords and keys, two groups with members, limits and
    access rules, pending invites, a project key, a price for the demo models, and about fifty requests through
    the gateway (in-process) to the built-in demo model. The passwords and keys are printed once, here."""
    settings = quiet_settings()
    _show(run(lambda: service.seed(settings, force=force), settings))


@app.command("reset")
def reset(force: bool = typer.Option(False, "--force", help="Also where ENVIRONMENT=prod.")) -> None:
    """Remove exactly what the demo made (its people with their keys, sessions, usage and request-log rows; its
    groups, invites, access rules, limits and prices), then seed it again. The audit log keeps every event; the
    reset is one more."""
    settings = quiet_settings()
    report = run(lambda: service.reset(settings, force=force), settings)
    removed = report.removed
    if removed is not None:
        console.print(
            f"removed: {removed.users} people, {removed.groups} groups, {removed.invites} invites, "
            f"{removed.access_rules} access rules, {removed.prices} price versions, {removed.budget_alerts} alerts",
            highlight=False,
            soft_wrap=True,
        )
    _show(report)


def _show(report: DemoReport) -> None:
    accounts = report.accounts
    table = Table(title="Demo people (shown once: passwords and keys are stored only as hashes)")
    for column in ("email", "role", "password", "API key"):
        table.add_column(column, overflow="fold")
    for person in accounts.people:
        table.add_row(person.email, person.role, person.password, person.key)
    console.print(table)
    console.print(
        f"project key (dave, bound to demo-research): {accounts.project_key}", highlight=False, soft_wrap=True
    )
    for email, token in accounts.invites:
        console.print(f"pending invite for {email}: {token}", highlight=False, soft_wrap=True)
    if accounts.prices:
        console.print(f"priced: {', '.join(accounts.prices)}", highlight=False)
    statuses = ", ".join(f"{count} x {status}" for status, count in sorted(report.statuses.items()))
    console.print(
        f"traffic: {sum(report.statuses.values())} requests through the demo model ({statuses})",
        highlight=False,
        soft_wrap=True,
    )
