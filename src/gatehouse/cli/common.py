"""What every command shares: settings, a database session, errors printed plainly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.errors import GatehouseError
from gatehouse.settings import Settings, get_settings

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


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; a Gatehouse error becomes a message and exit 1."""
    try:
        return asyncio.run(_await(coro_factory))
    except GatehouseError as exc:
        err_console.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


async def _await(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


@asynccontextmanager
async def db_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A committed-on-success session on a short-lived engine."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        await engine.dispose()
