"""The composition root: a start that fails half-way closes what it had started, and a clean stop closes it all."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from gatehouse.core.components import NotStarted
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.gateway.streams.registry import StreamRegistry
from gatehouse.jobs.models import ReplicaBeat
from gatehouse.runtime import prepare, running
from tests.conftest import make_settings


async def _replicas(database_url: str, tmp_path: Path) -> int:
    engine = create_engine(make_settings(database_url, tmp_path))
    try:
        async with create_sessionmaker(engine)() as session:
            return int((await session.execute(select(func.count()).select_from(ReplicaBeat))).scalar_one())
    finally:
        await engine.dispose()


async def test_a_start_that_fails_closes_what_started(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url, tmp_path)
    await prepare(settings)
    seen: dict[str, int] = {}

    async def broken_start(self: StreamRegistry) -> None:
        # By now the heartbeat (started early) has written this replica's row.
        seen["replicas"] = await _replicas(database_url, tmp_path)
        raise RuntimeError("the live-stream registry could not start")

    monkeypatch.setattr(StreamRegistry, "start", broken_start)
    with pytest.raises(RuntimeError, match="could not start"):
        async with running(settings):
            pytest.fail("a failed start must not yield")
    assert seen["replicas"] == 1
    assert await _replicas(database_url, tmp_path) == 0  # the heartbeat was closed: its row is gone


async def test_a_clean_stop_closes_everything(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    await prepare(settings)
    async with running(settings) as runtime:
        assert await _replicas(database_url, tmp_path) == 1
        components = runtime.components
        assert components.get(StreamRegistry) is runtime.streams
    assert await _replicas(database_url, tmp_path) == 0
    with pytest.raises(NotStarted):
        components.get(StreamRegistry)  # nothing is handed out after the stop
