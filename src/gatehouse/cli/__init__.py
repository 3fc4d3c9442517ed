"""The `gatehouse` command: one group with a sub-group per runbook area."""

from __future__ import annotations

import typer

from gatehouse.cli import (
    access,
    alerts,
    audit,
    backup,
    blocklist,
    budgets,
    config,
    db,
    demo,
    doctor,
    export,
    groups,
    jobs,
    keys,
    log_level,
    logs,
    prices,
    secret,
    serve,
    support_bundle,
    usage,
    users,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Gatehouse: a self-hosted AI gateway. Every runbook procedure is a command here.",
)
app.command("serve")(serve.serve)
app.command("version")(serve.version)
app.command("export")(export.export)
app.command("doctor")(doctor.doctor)
app.command("logs")(logs.logs)
app.command("support-bundle")(support_bundle.support_bundle)
app.command("reload")(config.reload)
app.add_typer(config.app, name="config")
app.add_typer(secret.app, name="secret")
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(keys.app, name="keys")
app.add_typer(groups.app, name="groups")
app.add_typer(access.app, name="access")
app.add_typer(usage.app, name="usage")
app.add_typer(prices.app, name="prices")
app.add_typer(budgets.app, name="budgets")
app.add_typer(audit.app, name="audit")
app.add_typer(backup.app, name="backup")
app.add_typer(jobs.app, name="jobs")
app.add_typer(alerts.app, name="alerts")
app.add_typer(log_level.app, name="log-level")
app.add_typer(blocklist.app, name="blocklist")
app.add_typer(demo.app, name="demo")


def main() -> None:
    """Entry point of the console script."""
    app()
