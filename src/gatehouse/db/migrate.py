"""Alembic, driven from Python: the commands behind `gatehouse db ...` and RUN_MIGRATIONS.

Alembic is imported only when a migration has to run: a start on an up-to-date database reads the
revision with one query and compares it with the heads read from the migration files (about a sixth of a
second of imports saved on every start).
"""

from __future__ import annotations

import asyncio
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.db.engine import ensure_sqlite_directory

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_REVISION = re.compile(r'^revision(?:: str)? = "([^"]+)"', re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:: [^=]+)? = (.+)$", re.MULTILINE)


class MigrationError(RuntimeError):
    """A migration could not run (Alembic's own error, in one line)."""


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations."""
    from alembic.config import Config

    ensure_sqlite_directory(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def head_revisions() -> tuple[str, ...]:
    """The revision(s) the code expects the database to be at: those no other migration builds on.

    Read from the migration files' `revision` / `down_revision` lines (tests/integration/test_migrations.py
    checks this against Alembic's own ScriptDirectory).
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text()
        found = _REVISION.search(source)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN_REVISION.search(source)
        if down is not None:
            parents.update(re.findall(r'"([^"]+)"', down.group(1)))
    return tuple(sorted(revisions - parents))


async def current_revisions(engine: AsyncEngine) -> tuple[str, ...]:
    """The revision(s) the database is at (empty when never migrated)."""
    async with engine.connect() as conn:
        try:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        except DBAPIError:
            if not await _has_version_table(conn):
                return ()  # never migrated
            raise  # the table is there: this is a real failure (an outage), not a fresh database
    return tuple(sorted(row[0] for row in rows))


async def _has_version_table(conn: Any) -> bool:
    from sqlalchemy import inspect

    await conn.rollback()
    return bool(await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")))


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade to `revision`; safe to call from a running event loop."""
    from alembic import command

    await asyncio.to_thread(_run, command.upgrade, alembic_config(database_url), revision)


async def downgrade(database_url: str, revision: str) -> None:
    """Downgrade to `revision` (e.g. `-1` or `base`)."""
    from alembic import command

    await asyncio.to_thread(_run, command.downgrade, alembic_config(database_url), revision)


def _run(step: Any, config: Config, revision: str) -> None:
    from alembic.util import CommandError

    try:
        step(config, revision)
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc
