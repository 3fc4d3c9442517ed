"""Alembic, driven from Python: the commands behind `gatehouse db ...` and RUN_MIGRATIONS.

Alembic is imported only when a migration has to run: a start on an up-to-date database reads the
revision with one query and compares it with the heads read from the migration files (about a sixth of a
second of imports saved on every start).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import sys
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


class MigrationError(RuntimeError):
    """A migration could not run (Alembic's own error, in one line)."""


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations."""
    from alembic.config import Config

    ensure_sqlite_directory(database_url)
    # Alembic's default is the sys.stdout of when it was imported; output goes to the caller's current one
    # (a redirected or captured stdout, as typer's CliRunner swaps in for each command).
    config = Config(stdout=sys.stdout)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def head_revisions() -> tuple[str, ...]:
    """The revision(s) the code expects the database to be at: those no other migration builds on.

    Read from the migration files' `revision` / `down_revision` assignments (any quoting, as the template
    writes them); a file where they cannot be read makes this ask Alembic itself.
    tests/integration/db/test_migrations.py checks the result against Alembic's ScriptDirectory.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = _assignments(path.read_text(), ("revision", "down_revision"))
        if not isinstance(found.get("revision"), str):
            return _alembic_heads()
        revisions.add(found["revision"])
        down = found.get("down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list):
            parents.update(str(parent) for parent in down)
    return tuple(sorted(revisions - parents))


def _assignments(source: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The literal values assigned to `names` at a module's top level."""
    values: dict[str, Any] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return values
    for node in tree.body:
        target: ast.expr | None = None
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and target.id in names and value is not None:
            with contextlib.suppress(ValueError, TypeError, SyntaxError):
                values[target.id] = ast.literal_eval(value)
    return values


def _alembic_heads() -> tuple[str, ...]:
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_heads()))


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
