"""`gatehouse log-level ...`: the log level for a period on every replica, through Redis (monitoring/loglevel.py).

The override lives in Redis and is announced on the bus, so this works without the server's API. Without
REDIS_URL it lives in the one server process's memory, which a command cannot reach: then the command says to use
the API (PUT /admin/log-level) instead.
"""

from __future__ import annotations

from datetime import datetime

import typer

from gatehouse.cli.common import CLI_ACTOR, console, err_console, quiet_settings, run, session_and_bus
from gatehouse.monitoring import loglevel
from gatehouse.monitoring.loglevel import Override, RedisOverrideStore
from gatehouse.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Debug logging for a period, on every replica (needs REDIS_URL).")
NO_REDIS = (
    "REDIS_URL is not set: the override then lives in the server's memory, which this command cannot reach. "
    "Use the API instead: curl -X PUT $GATEHOUSE/admin/log-level -H 'authorization: Bearer <admin key>' "
    '-d \'{"level": "DEBUG", "minutes": 60}\' (GET to show, DELETE to end it).'
)


def _store(settings: Settings) -> RedisOverrideStore:
    if not settings.redis_url:
        err_console.print(f"[red]Error:[/red] {NO_REDIS}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    return RedisOverrideStore(settings.redis_url, settings.redis_prefix)


def _describe(override: Override) -> str:
    what = override.level or "the settings' level"
    if override.loggers:
        what += f" for {', '.join(override.loggers)}"
    if override.slow_sql_ms is not None:
        what += f", slow SQL over {override.slow_sql_ms:g} ms"
    until = override.until.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    left = max(int(override.remaining(datetime.now(override.until.tzinfo))), 0)
    return f"{what} until {until} ({left // 60} min {left % 60} s left), set by {override.by or 'unknown'}"


@app.command("set")
def set_level(
    level: str = typer.Argument(
        None, help="DEBUG, INFO, WARNING, ERROR or CRITICAL (may be left out with --slow-sql-ms)."
    ),
    minutes: float = typer.Option(None, "--minutes", "-m", help="How long (1 to 1440 minutes); default 60."),
    seconds: int = typer.Option(None, "--seconds", help="How long in seconds instead of minutes (1 to 86400)."),
    loggers: list[str] = typer.Option(None, "--logger", "-l", help="Only this logger and its children (repeatable)."),
    slow_sql_ms: float = typer.Option(None, "--slow-sql-ms", help="Also log statements slower than this (ms)."),
) -> None:
    """Set the log level on every replica for a period (audited); it reverts by itself at the end."""
    settings = quiet_settings()
    store = _store(settings)
    if minutes is not None and seconds is not None:
        err_console.print("[red]Error:[/red] give --minutes or --seconds, not both.")
        raise typer.Exit(2)
    period = seconds if seconds is not None else round((minutes if minutes is not None else 60) * 60)

    async def go() -> Override:
        try:
            async with session_and_bus(settings) as (session, bus):
                return await loglevel.change(
                    session,
                    store=store,
                    bus=bus,
                    actor=CLI_ACTOR,
                    level=level,
                    seconds=period,
                    loggers=loggers or None,
                    slow_sql_ms=slow_sql_ms,
                )
        finally:
            await store.close()

    override = run(go, settings)
    console.print(f"log level set on every replica: {_describe(override)}", highlight=False, soft_wrap=True)


@app.command("show")
def show() -> None:
    """The override in force (from Redis) and LOG_LEVEL, which it reverts to."""
    settings = quiet_settings()
    store = _store(settings)

    async def go() -> Override | None:
        try:
            return await store.load()
        finally:
            await store.close()

    override = run(go, settings)
    console.print(f"LOG_LEVEL={settings.log_level}, SLOW_SQL_MS={settings.slow_sql_ms:g}", highlight=False)
    console.print(
        f"override: {_describe(override)}" if override else "no override: the settings apply", highlight=False
    )


@app.command("reset")
def reset() -> None:
    """End the override now on every replica (audited); back to LOG_LEVEL and SLOW_SQL_MS."""
    settings = quiet_settings()
    store = _store(settings)

    async def go() -> Override | None:
        try:
            async with session_and_bus(settings) as (session, bus):
                return await loglevel.reset(session, store=store, bus=bus, actor=CLI_ACTOR)
        finally:
            await store.close()

    ended = run(go, settings)
    console.print(
        f"ended: {_describe(ended)}" if ended else "no override was in force", highlight=False, soft_wrap=True
    )
