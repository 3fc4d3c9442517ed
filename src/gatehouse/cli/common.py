"""What every command shares: settings, a database session, errors printed plainly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar
from urllib.parse import quote

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus, create_bus
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.session import transaction
from gatehouse.errors import GatehouseError
from gatehouse.settings import Settings, get_settings

CLI_ACTOR = Actor.system("cli")  # who acts, in the audit log, for a command run from a shell
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def load_settings() -> Settings:
    """Settings from the environment, or a clear message and exit 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            err_console.print(f"[red]Invalid setting {name}:[/red] {err['msg']}")
        raise typer.Exit(2) from exc


def quiet_settings() -> Settings:
    """Settings, with log lines kept off the terminal unless they are warnings (and always on stderr, never on
    stdout, where a command's output, e.g. a ZIP, may go)."""
    from gatehouse.core.logging import LogFormat, configure_logging

    settings = load_settings()
    quiet = settings.model_copy(update={"log_level": "WARNING", "log_format": LogFormat.CONSOLE})
    with plain_errors(settings):
        configure_logging(quiet)
    return settings


def run(coro_factory: Callable[[], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run a coroutine; a Gatehouse or database error becomes a message and exit 1."""
    with plain_errors(settings, (GatehouseError, SQLAlchemyError, OSError)):
        return asyncio.run(_await(coro_factory))


@contextmanager
def plain_errors(settings: Settings | None, kinds: tuple[type[Exception], ...] = (Exception,)) -> Iterator[None]:
    """Errors of `kinds` become one line on stderr (never a traceback, never the database password) and exit 1."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise  # typer's own ways out: already handled
    except kinds as exc:
        err_console.print(f"[red]Error:[/red] {_describe(exc, settings)}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from exc


def _describe(exc: Exception, settings: Settings | None) -> str:
    if isinstance(exc, GatehouseError):
        return exc.message
    # SQLAlchemy appends the statement, its parameters and a link on further lines: the first says it all.
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    for secret in _database_secrets(settings):
        text = text.replace(secret, "***")
    return text


def _database_secrets(settings: Settings | None) -> list[str]:
    if settings is None:
        return []
    secrets = [settings.db_password.get_secret_value()]
    with contextlib.suppress(Exception):
        url = make_url(settings.database_url)
        secrets += [url.password or "", quote(url.password or "", safe="")]
    return [s for s in secrets if s]


async def _await(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


@asynccontextmanager
async def session_and_bus(settings: Settings) -> AsyncIterator[tuple[AsyncSession, EventBus]]:
    """A committed-on-success session whose bus events (a revoked key, a user changed) are published after the
    commit, so running servers that share REDIS_URL act on them at once."""
    engine = create_engine(settings)
    bus = create_bus(settings.redis_url, settings.redis_prefix)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            yield session, bus
    finally:
        await bus.close()
        await engine.dispose()


@asynccontextmanager
async def db_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A committed-on-success session on a short-lived engine."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        await engine.dispose()
