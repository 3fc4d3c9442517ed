"""`gatehouse alerts ...`: the budget alerts raised and their webhook deliveries; a test webhook (alerts/)."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.table import Table

from gatehouse.alerts import service
from gatehouse.alerts.schemas import AlertRead, DeliveryRead
from gatehouse.alerts.webhook import Webhook
from gatehouse.cli.common import CLI_ACTOR, console, db_session, err_console, quiet_settings, run
from gatehouse.db.base import utcnow

app = typer.Typer(no_args_is_help=True, help="Budget alerts: thresholds crossed, webhooks delivered.")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _amount(alert: AlertRead, value: float) -> str:
    return f"{value:g} {alert.currency}" if alert.currency else f"{value:g}"


def _delivery(rows: list[DeliveryRead]) -> str:
    if not rows:
        return "no webhook"
    row = rows[-1]
    text = f"{row.status} after {row.attempts} attempt{'s' if row.attempts != 1 else ''}"
    if row.status == "delivered":
        text += f" at {_when(row.delivered_at)}"
    elif row.status == "pending" and row.next_attempt_at:
        text += f", next at {_when(row.next_attempt_at)}"
    return text + (f"; last error: {row.last_error}" if row.last_error and row.status != "delivered" else "")


@app.command("list")
def list_alerts(
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=500, help="How many, newest first."),
    delivery: str | None = typer.Option(
        None, "--delivery", help="Only alerts whose webhook is pending, delivered or failed."
    ),
) -> None:
    """The budget alerts raised (newest first): the budget, the measure and threshold crossed, what it had used of
    its limit, and its webhook's delivery. Times are UTC."""
    if delivery is not None and delivery not in ("pending", "delivered", "failed"):
        err_console.print("[red]--delivery[/red] takes pending, delivered or failed")
        raise typer.Exit(2)
    settings = quiet_settings()

    async def go() -> list[AlertRead]:
        async with db_session(settings) as session:
            found = await service.list_alerts(session, before_id=None, limit=limit, delivery=delivery)
            return [AlertRead.of(alert, rows) for alert, rows in found]

    alerts = run(go, settings)
    webhook = Webhook.from_settings(settings)
    console.print(
        f"thresholds: {settings.budget_alert_thresholds or 'off'} (percent); "
        f"webhook: {webhook.target if webhook else 'none (ALERT_WEBHOOK_URL is not set)'}",
        soft_wrap=True,
    )
    if not alerts:
        console.print("no budget alert yet")
        return
    table = Table("id", "at", "budget", "period", "measure", "threshold", "used / limit", "webhook", expand=True)
    for alert in alerts:
        budget = alert.budget
        table.add_row(
            str(alert.id),
            _when(alert.created_at),
            f"{budget.scope} {budget.subject_id} ({budget.subject_name})",
            f"{budget.period} of {budget.start}",
            alert.measure,
            f"{alert.threshold}%",
            f"{_amount(alert, alert.used)} / {_amount(alert, alert.limit)} ({alert.percent:g}%)",
            _delivery(alert.deliveries),
        )
    console.print(table)


@app.command("test")
def test_webhook() -> None:
    """Send a test event (`alert.test`) to ALERT_WEBHOOK_URL from this shell, signed with ALERT_WEBHOOK_SECRET as
    every alert is; one attempt, audited. Exit 1 unless the receiver answered 2xx."""
    settings = quiet_settings()
    webhook = Webhook.from_settings(settings)

    async def go() -> service.SentTest:
        try:
            async with db_session(settings) as session:
                return await service.send_test(session, webhook=webhook, actor=CLI_ACTOR, at=utcnow())
        finally:
            if webhook is not None:
                await webhook.close()

    sent = run(go, settings)
    outcome = sent.outcome
    if not outcome.delivered:
        err_console.print(f"[red]not delivered[/red] to {sent.target}: {outcome.error}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"delivered to {sent.target}: HTTP {outcome.status} in {outcome.seconds:.2f} s (id {sent.event_id})")
