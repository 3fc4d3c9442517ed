"""`gatehouse audit ...`: read the audit log and verify its hash chain."""

from __future__ import annotations

import asyncio
import time

import typer

from gatehouse.audit import service
from gatehouse.audit.models import AuditEvent
from gatehouse.cli.common import console, db_session, err_console, load_settings, run

app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


def _line(event: AuditEvent) -> str:
    actor = event.actor_label or event.actor_type
    target = f" {event.target_type}:{event.target_id}" if event.target_type else ""
    details = "" if event.details == "{}" else " " + event.details
    ip = f" from {event.client_ip}" if event.client_ip else ""
    return f"{event.id:>8} {event.created_at:%Y-%m-%d %H:%M:%S} {actor}{ip} {event.action}{target}{details}"


@app.command()
def tail(
    lines: int = typer.Option(20, "-n", "--lines", min=1, max=10_000, help="How many recent events."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events as they are written."),
    action: str | None = typer.Option(None, help='Only this action, or a prefix ending in "." (e.g. "user.").'),
) -> None:
    """Print the latest audit events (oldest first), and with --follow keep printing new ones."""
    settings = load_settings()
    where = service.AuditFilter(action=action)

    async def latest() -> list[AuditEvent]:
        async with db_session(settings) as session:
            return list(reversed(await service.list_events(session, where=where, limit=lines)))

    events = run(latest)
    for event in events:
        console.print(_line(event), highlight=False, soft_wrap=True)
    if not follow:
        return
    last = events[-1].id if events else 0

    async def newer(after: int) -> list[AuditEvent]:
        async with db_session(settings) as session:
            return list(await service.list_events(session, where=where, after_id=after, limit=1000))

    try:
        while True:
            time.sleep(1)
            for event in asyncio.run(newer(last)):
                console.print(_line(event), highlight=False, soft_wrap=True)
                last = event.id
    except KeyboardInterrupt:
        return


@app.command()
def verify() -> None:
    """Check the whole hash chain: prints OK, or the first row an edit, deletion or insertion broke (exit 1)."""
    settings = load_settings()

    async def go() -> service.Verification:
        async with db_session(settings) as session:
            return await service.verify_chain(session)

    result = run(go)
    if result.ok:
        console.print(f"OK: {result.checked} audit events, hash chain intact")
        return
    broken = result.broken
    where = f"audit event {broken.row_id}: {broken.reason}" if broken else "an unknown place"
    err_console.print(f"BROKEN at {where} ({result.checked} rows checked)")
    raise typer.Exit(1)
