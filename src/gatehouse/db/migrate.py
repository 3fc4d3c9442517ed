"""Alembic, driven from Python: the commands behind `gatehouse db ...` and RUN_MIGRATIONS."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.db.engine import ensure_sqlite_directory

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations."""
    ensure_sqlite_directory(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revisions() -> tuple[str, ...]:
    """The revision(s) the code expects the database to be at."""
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    return tuple(script.get_heads())


async def current_revisions(engine: AsyncEngine) -> tuple[str, ...]:
    """The revision(s) the database is at (empty when never migrated)."""
    async with engine.connect() as conn:
        heads = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    return tuple(heads)


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade to `revision`; safe to call from a running event loop."""
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), revision)


async def downgrade(database_url: str, revision: str) -> None:
    """Downgrade to `revision` (e.g. `-1` or `base`)."""
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), revision)
