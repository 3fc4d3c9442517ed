"""Migrations: `gatehouse db downgrade base` then `upgrade head` on SQLite and PostgreSQL, through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.db.migrate import head_revisions
from gatehouse.models import Base


def gatehouse(database_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "gatehouse", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def _tables(database_url: str) -> set[str]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_downgrade_base_then_upgrade_head(database_url: str, tmp_path: Path) -> None:
    up = gatehouse(database_url, "db", "upgrade", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert set(Base.metadata.tables) <= await _tables(database_url)
    current = gatehouse(database_url, "db", "current", cwd=tmp_path)
    assert head_revisions()[0] in current.stdout

    down = gatehouse(database_url, "db", "downgrade", "base", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert await _tables(database_url) <= {"alembic_version"}

    again = gatehouse(database_url, "db", "upgrade", "head", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert set(Base.metadata.tables) <= await _tables(database_url)
    heads = gatehouse(database_url, "db", "heads", cwd=tmp_path)
    history = gatehouse(database_url, "db", "history", cwd=tmp_path)
    assert head_revisions()[0] in heads.stdout and head_revisions()[0] in history.stdout


async def test_models_match_migrations(database_url: str, tmp_path: Path) -> None:
    """Autogenerate finds nothing to do at head: the models and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    assert gatehouse(database_url, "db", "upgrade", cwd=tmp_path).returncode == 0
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_readyz_reports_migrations_behind(database_url: str, tmp_path: Path) -> None:
    from tests.conftest import make_settings, running_app

    async with running_app(make_settings(database_url, tmp_path)) as harness:
        assert (await harness.client.get("/readyz")).status_code == 200
        assert gatehouse(database_url, "db", "downgrade", "base", cwd=tmp_path).returncode == 0
        response = await harness.client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["failed"] == "migrations"
        assert "gatehouse db upgrade" in response.json()["checks"]["migrations"]


def test_head_revisions_read_from_the_files_match_alembic() -> None:
    from alembic.script import ScriptDirectory

    from gatehouse.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert head_revisions() == tuple(sorted(script.get_heads()))
    assert {rev.revision for rev in script.walk_revisions()} >= set(head_revisions())


async def test_current_revisions_of_a_fresh_and_of_a_migrated_database(database_url: str, tmp_path: Path) -> None:
    from gatehouse.db.migrate import current_revisions

    engine = create_async_engine(database_url)
    try:
        assert await current_revisions(engine) == ()
        assert gatehouse(database_url, "db", "upgrade", cwd=tmp_path).returncode == 0
        assert await current_revisions(engine) == head_revisions()
    finally:
        await engine.dispose()


def test_head_revisions_read_a_migration_written_by_the_template(tmp_path: Path, monkeypatch: Any) -> None:
    """The template (script.py.mako) writes `revision: str = '0005'` (repr, single quotes)."""
    import shutil

    from gatehouse.db import migrate

    shutil.copytree(migrate.MIGRATIONS_DIR, tmp_path / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    head = head_revisions()[0]
    (tmp_path / "migrations" / "versions" / "2099-01-01_next.py").write_text(
        f"revision: str = '9999'\ndown_revision: str | None = {head!r}\n"
        "branch_labels = None\ndepends_on = None\n\ndef upgrade() -> None:\n    pass\n"
    )
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", tmp_path / "migrations")
    migrate.head_revisions.cache_clear()
    try:
        assert migrate.head_revisions() == ("9999",)
    finally:
        migrate.head_revisions.cache_clear()
