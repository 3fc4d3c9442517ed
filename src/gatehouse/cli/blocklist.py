"""`gatehouse blocklist ...`: block abusive addresses and networks from the shell: add, list, remove."""

from __future__ import annotations

from datetime import datetime

import typer

from gatehouse.blocklist import service
from gatehouse.blocklist.errors import InvalidExpiry
from gatehouse.blocklist.schemas import BlockRead
from gatehouse.cli.common import CLI_ACTOR, console, db_session, load_settings, run, session_and_bus
from gatehouse.db.base import utcnow

app = typer.Typer(
    no_args_is_help=True,
    help="The IP blocklist: addresses and CIDR networks refused on every route but the health probes.",
)


def _until(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidExpiry(f"--until {text!r} is not an ISO 8601 time: e.g. 2026-12-31T18:00:00Z.") from None


@app.command("add")
def add(
    network: str = typer.Argument(..., help="An address (blocked alone) or a CIDR network, IPv4 or IPv6."),
    reason: str = typer.Option(..., "--reason", help="Why (operators see it in the list and the audit log)."),
    minutes: int | None = typer.Option(None, "--minutes", min=1, help="The block ends this many minutes from now."),
    until: str | None = typer.Option(None, "--until", help="Or: it ends at this ISO 8601 time (with a zone)."),
) -> None:
    """Block NETWORK on every replica (within a second with REDIS_URL set; else at their next reload, a second)."""
    settings = load_settings()

    async def go() -> BlockRead:
        async with session_and_bus(settings) as (session, bus):
            row = await service.add(
                session,
                bus=bus,
                actor=CLI_ACTOR,
                network=network,
                reason=reason,
                expires_at=_until(until),
                minutes=minutes,
            )
            return BlockRead.of(row, now=utcnow())

    entry = run(go, settings)
    ends = f"until {entry.expires_at.isoformat()}" if entry.expires_at else "until removed"
    console.print(f"entry {entry.id}: {entry.network} blocked {ends}", highlight=False)


@app.command("list")
def list_blocks() -> None:
    """One tab-separated line per entry, newest first: id, network, state (active, or expired until the purge),
    expiry, who added it, reason."""
    settings = load_settings()

    async def go() -> list[BlockRead]:
        async with db_session(settings) as session:
            now = utcnow()
            return [BlockRead.of(row, now=now) for row in await service.list_entries(session)]

    entries = run(go, settings)
    if not entries:
        typer.echo("the blocklist is empty")
    for entry in entries:
        state = "expired" if entry.expired else "active"
        ends = entry.expires_at.isoformat() if entry.expires_at else "never"
        who = entry.created_by_label or "-"
        typer.echo(f"{entry.id}\t{entry.network}\t{state}\t{ends}\t{who}\t{entry.reason}")


@app.command("remove")
def remove(block_id: int = typer.Argument(..., min=1, help="The entry's id (see `gatehouse blocklist list`).")) -> None:
    """Take an entry off the blocklist."""
    settings = load_settings()

    async def go() -> str:
        async with session_and_bus(settings) as (session, bus):
            return (await service.remove(session, bus=bus, actor=CLI_ACTOR, block_id=block_id)).network

    network = run(go, settings)
    console.print(f"entry {block_id} removed: {network} is no longer blocked", highlight=False)
