"""`gatehouse config show` and `gatehouse reload`: the effective settings, and applying changed ones live."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.cli.common import CLI_ACTOR, console, db_session, err_console, load_settings, quiet_settings, run
from gatehouse.configuration.effective import effective, suspects
from gatehouse.configuration.pidfile import pid_path, read_pid_file
from gatehouse.configuration.reload import new_reload_id, signal_data
from gatehouse.core.bus import Signal, create_bus
from gatehouse.db.base import utcnow
from gatehouse.jobs.replicas import host_identity, live_replicas
from gatehouse.settings import Settings

app = typer.Typer(no_args_is_help=True, help="The effective configuration.")
OUTCOMES = ("config.reloaded", "config.reload_failed")


@app.command("show")
def show(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    env_file: Path = typer.Option(Path(".env"), help="The .env file Gatehouse reads (the working directory's)."),
) -> None:
    """Every setting's effective value and its source (environment, NAME_FILE file, .env, default), secrets and URL
    passwords redacted; and variables that look like a misspelt setting, with the closest real name."""
    settings = load_settings()
    rows = effective(settings, env_file=env_file)
    odd = suspects(env_file=env_file)
    if as_json:
        print(
            json.dumps(
                {
                    "settings": [vars(row) for row in rows],
                    "unknown": [vars(suspect) for suspect in odd],
                },
                indent=2,
            )
        )
        return
    table = Table("setting", "value", "source")
    for row in rows:
        source = f"{row.source} ({row.detail})" if row.detail else row.source
        table.add_row(row.name, row.value, source)
    console.print(table)
    for suspect in odd:
        hint = f"did you mean {suspect.closest}?" if suspect.closest else "no setting has a similar name"
        err_console.print(f"[yellow]Unknown variable {suspect.name} ({suspect.where}):[/yellow] {hint}")


def reload(
    timeout: float = typer.Option(10.0, min=1, max=120, help="Seconds to wait for every live replica's outcome."),
) -> None:
    """Reload the configuration on every replica: each re-reads its settings (NAME_FILE files, .env) and
    GATEHOUSE_CONFIG, validates, and applies what can change live (through Redis; without it, SIGHUP to the local
    server named by DATA_DIR/gatehouse.pid). Prints each live replica's outcome; exit 1 if any failed or did not
    answer in time."""
    settings = quiet_settings()
    since = utcnow() - timedelta(seconds=1)
    reload_id: str | None = None
    pid: int | None = None
    if settings.redis_url:
        reload_id = new_reload_id()
        run(lambda: _publish(settings, reload_id or ""), settings)
        console.print(f"Reload {reload_id} published to every replica.")
    else:
        pid = _signal_local_server(settings)
        console.print(f"SIGHUP sent to the server (pid {pid}).")
    answered, expected = run(lambda: _wait(settings, reload_id, pid, since, timeout), settings)
    bad = _print_outcomes(answered, expected)
    if bad:
        raise typer.Exit(1)


async def _publish(settings: Settings, reload_id: str) -> None:
    bus = create_bus(settings.redis_url, settings.redis_prefix)
    try:
        await bus.publish(Signal.CONFIG_RELOAD, signal_data(reload_id, origin=f"cli-{os.getpid()}", actor=CLI_ACTOR))
    finally:
        await bus.close()


def _signal_local_server(settings: Settings) -> int:
    served = read_pid_file(settings.data_dir)
    path = pid_path(settings.data_dir)
    if served is None:
        err_console.print(
            f"[red]No running server found:[/red] {path} does not exist (REDIS_URL is not set, so the reload goes "
            "to the local server by SIGHUP). Run this where `gatehouse serve` runs, with the same DATA_DIR."
        )
        raise typer.Exit(1)
    if served.workers > 1:
        # uvicorn's supervisor restarts every worker on SIGHUP: not a reload. (Several workers need Redis anyway.)
        err_console.print("[red]The server runs several workers:[/red] set REDIS_URL so the reload reaches each.")
        raise typer.Exit(1)
    try:
        os.kill(served.pid, signal.SIGHUP)
    except ProcessLookupError:
        err_console.print(f"[red]No server runs as pid {served.pid}:[/red] {path} is stale (remove it).")
        raise typer.Exit(1) from None
    return served.pid


async def _wait(
    settings: Settings, reload_id: str | None, pid: int | None, since: datetime, wait_seconds: float
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each replica's outcome (by replica id) and the live replicas expected to answer (id -> host)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        async with db_session(settings) as session:
            replicas = await live_replicas(session)
            if pid is not None:  # SIGHUP reaches one process: the one on this host with that pid
                replicas = [r for r in replicas if r.pid == pid and r.host_id in (None, host_identity())]
            expected = {r.id: r.host for r in replicas}
            query = select(AuditEvent).where(AuditEvent.action.in_(OUTCOMES), AuditEvent.created_at >= since)
            rows = (await session.execute(query.order_by(AuditEvent.id))).scalars().all()
        answered: dict[str, dict[str, Any]] = {}
        for row in rows:
            details = json.loads(row.details)
            if reload_id is not None and details.get("reload_id") != reload_id:
                continue
            if pid is not None and row.target_id not in expected:
                continue
            answered[str(row.target_id)] = {"action": row.action, **details}
        if set(expected) <= set(answered) or time.monotonic() >= deadline:
            return answered, expected
        await asyncio.sleep(0.3)


def _print_outcomes(answered: dict[str, dict[str, Any]], expected: dict[str, str]) -> bool:
    """A line per replica; whether any failed or did not answer."""
    bad = False
    table = Table("replica", "host", "outcome", "applied", "needs a restart / error")
    for replica in sorted(set(expected) | set(answered)):
        outcome = answered.get(replica)
        host = expected.get(replica, "")
        if outcome is None:
            bad = True
            table.add_row(replica, host, "[red]no answer[/red]", "", "did not report within the wait")
        elif outcome["action"] == "config.reload_failed":
            bad = True
            table.add_row(replica, host, "[red]failed[/red]", "", outcome.get("error", ""))
        else:
            restart = ", ".join(outcome.get("restart_needed", []))
            table.add_row(replica, host, "[green]reloaded[/green]", ", ".join(outcome.get("changed", [])), restart)
    if not expected and not answered:
        bad = True
        err_console.print("[red]No live replica found[/red] (the replicas table has no fresh heartbeat).")
    console.print(table)
    return bad
