"""Storage: `gatehouse db stats` numbers grow with real rows, /admin/health's storage section and its low-disk warning,
the storage gauges on /metrics, and `gatehouse db maintain` on both backends, as a job and refusing a VACUUM without
room (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
import pytest
from sqlalchemy import delete, func, insert, select, text
from typer.testing import CliRunner, Result

from gatehouse.cli import app as cli
from gatehouse.db.base import utcnow
from gatehouse.monitoring.maintain import NotEnoughSpaceToVacuum, maintain
from gatehouse.monitoring.models import OpsSample
from gatehouse.monitoring.storage import collect
from gatehouse.settings import get_settings
from tests.conftest import Harness, make_settings, running_app

ROWS = 4000
JOB_TOKEN = "job-token-for-storage-tests-0123"


async def _fill(harness: Harness, rows: int = ROWS) -> None:
    """`rows` real rows in ops_sample (a table the idle test app leaves alone), in one transaction."""
    values = [
        {
            "created_at": utcnow(),
            "replica": f"test-replica-{i % 7}-" + "x" * 40,
            "statements": i,
            "statement_seconds": 0.5,
        }
        for i in range(rows)
    ]
    async with harness.runtime.db.engine.begin() as conn:
        await conn.execute(insert(OpsSample), values)
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ANALYZE ops_sample"))  # the row estimate comes from the planner's statistics


async def test_db_stats_grow_with_rows_and_list_the_largest_tables(harness: Harness) -> None:
    engine, settings = harness.runtime.db.engine, harness.settings
    before = await collect(engine, settings)
    await _fill(harness)
    after = await collect(engine, settings, largest=5)

    assert after.database.size_bytes > before.database.size_bytes
    assert len(after.database.tables) == 5
    biggest = after.database.tables[0]
    assert biggest.name == "ops_sample", [t.name for t in after.database.tables]
    assert biggest.total_bytes > 100_000 and biggest.rows is not None and biggest.rows >= ROWS * 0.9
    if after.database.kind == "sqlite":
        assert biggest.rows == ROWS  # counted
        assert after.database.page_count and after.database.page_size
        assert after.database.file_bytes is not None and after.database.wal_bytes is not None
        assert after.database.page_count > (before.database.page_count or 0)
    else:
        assert after.database.dead_rows is not None
    assert {d.label for d in after.disks} == {"data", "backups"}  # no LOG_FILE: no logs disk
    assert all(0 < d.free_bytes <= d.total_bytes for d in after.disks)
    assert after.backups.files == 0 and after.logs.path is None


async def test_backup_and_log_directories_are_measured(database_url: str, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "gatehouse.log"
    settings = make_settings(database_url, tmp_path, log_file=log_file, backup_dir=tmp_path / "backups")
    async with running_app(settings) as harness:
        (tmp_path / "backups").mkdir(exist_ok=True)
        (tmp_path / "backups" / "b1.json").write_text("{}")
        (tmp_path / "backups" / "b1.sqlite").write_bytes(b"x" * 5000)
        (log_file.parent / "gatehouse.log.2026-11-30.gz").write_bytes(b"y" * 3000)
        (log_file.parent / "someone-else.txt").write_bytes(b"z" * 100_000)  # not ours: not counted
        report = await collect(harness.runtime.db.engine, settings)
    assert report.backups.backups == 1 and report.backups.files == 2 and report.backups.bytes == 5002
    assert report.logs.files == 2  # gatehouse.log and its rotated week
    assert 3000 <= report.logs.bytes < 100_000
    assert {d.label for d in report.disks} == {"data", "backups", "logs"}


async def test_health_has_storage_and_warns_when_disk_is_low(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path)) as harness:
        body = (await harness.client.get("/admin/health")).json()
    storage = body["storage"]
    assert storage["status"] == "ok" and storage["error"] is None
    assert storage["database_bytes"] > 0
    assert {d["path"] for d in storage["disks"]} == {"data", "backups"}
    assert all(d["status"] == "ok" and d["free_bytes"] > 0 for d in storage["disks"])

    # A threshold no disk meets: every disk warns, naming the setting, and the gateway is degraded.
    async with running_app(make_settings(database_url, tmp_path, disk_warn_percent=100)) as harness:
        body = (await harness.client.get("/admin/health")).json()
    assert body["storage"]["status"] == "warn"
    assert body["status"] == "degraded"
    assert all("DISK_WARN_PERCENT=100" in d["reason"] for d in body["storage"]["disks"])


async def test_storage_gauges_on_metrics(harness: Harness) -> None:
    pattern = re.compile(r'^gatehouse_disk_free_bytes\{path="data"\} (\S+)$', re.M)
    async with asyncio.timeout(20):
        while True:  # the first refresh runs in the background right after the start
            body = (await harness.client.get("/metrics")).text
            if pattern.search(body):
                break
            await asyncio.sleep(0.05)
    for line in (
        'gatehouse_disk_free_bytes{path="backups"}',
        'gatehouse_disk_total_bytes{path="data"}',
        'gatehouse_disk_total_bytes{path="backups"}',
        "gatehouse_database_size_bytes ",
        "gatehouse_backup_dir_bytes ",
        "gatehouse_log_dir_bytes ",
    ):
        assert line in body, line
    found = re.search(r"^gatehouse_database_size_bytes (\S+)$", body, re.M)
    assert found and float(found.group(1)) > 0


async def test_maintain_on_both_backends(harness: Harness) -> None:
    await _fill(harness)
    async with harness.runtime.db.engine.begin() as conn:
        await conn.execute(delete(OpsSample).where(OpsSample.statements < ROWS // 2))  # whole pages go free
    report = await maintain(harness.settings, vacuum=True)
    if report.kind == "sqlite":
        assert report.steps == ["ANALYZE", "PRAGMA optimize", "VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"]
        assert report.freelist_before and report.freelist_before > 0  # the deleted half left free pages
        assert report.freelist_after == 0
        assert report.wal_after == 0  # truncated
        assert report.size_after < report.size_before
    else:
        assert report.tables >= 10 and report.steps == [f"VACUUM (ANALYZE) of {report.tables} tables"]
        assert report.dead_rows_after is not None
    assert report.size_before > 0 and report.size_after > 0 and report.seconds >= 0
    async with harness.runtime.db.engine.connect() as conn:  # the data is all there
        assert (await conn.execute(select(func.count()).select_from(OpsSample))).scalar_one() == ROWS // 2


async def test_vacuum_refused_without_room(database_url: str, tmp_path: Path) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's VACUUM (ANALYZE) rewrites nothing: there is no room to check")
    # A margin no disk has: the refusal, with the numbers, and the database untouched.
    settings = make_settings(database_url, tmp_path, vacuum_free_margin_mb=10**12)
    async with running_app(settings):
        pass
    with pytest.raises(NotEnoughSpaceToVacuum) as refused:
        await maintain(settings, vacuum=True)
    assert "VACUUM_FREE_MARGIN_MB" in refused.value.message and "without --vacuum" in refused.value.message
    report = await maintain(settings, vacuum=False)  # the rest needs no room
    assert "VACUUM" not in report.steps


async def test_maintain_as_a_job_with_the_job_token(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, job_token=JOB_TOKEN, maintain_schedule="weekly@sun 04:30")
    async with running_app(settings) as harness:
        listed = (await harness.client.get("/admin/jobs")).json()["jobs"]
        maintain_job = next(job for job in listed if job["name"] == "maintain")
        assert maintain_job["schedule"] == "weekly@sun 04:30"
        answer = await harness.client.post(
            "/admin/jobs/maintain/run", headers={"authorization": "", "x-job-token": JOB_TOKEN}
        )
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["status"] == "ok" and run["trigger"] == "token"
    assert run["counts"]["size_before"] > 0 and "seconds" in run["counts"]


def test_cli_stats_and_maintain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands as an operator runs them (SQLite; the PostgreSQL paths are the service's, tested above)."""
    for name, value in {
        "DATABASE_URL": f"sqlite:///{tmp_path}/gatehouse.db",
        "DATA_DIR": str(tmp_path),
        "BACKUP_DIR": str(tmp_path / "backups"),
        "REDIS_URL": "",
        "VACUUM_FREE_MARGIN_MB": "64",
    }.items():
        monkeypatch.setenv(name, value)
    assert gatehouse("db", "upgrade").exit_code == 0
    stats = gatehouse("db", "stats", "--json", "--tables", "3")
    assert stats.exit_code == 0, stats.output
    report = orjson.loads(stats.stdout)
    assert report["database"]["kind"] == "sqlite" and report["database"]["size_bytes"] > 0
    assert len(report["database"]["tables"]) == 3 and report["status"] in ("ok", "warn")
    assert {disk["label"] for disk in report["disks"]} == {"data", "backups"}
    shown = gatehouse("db", "stats")
    assert shown.exit_code == 0 and "pages of 4096 bytes" in shown.stdout and "backups" in shown.stdout

    done = gatehouse("db", "maintain", "--vacuum")
    assert done.exit_code == 0, done.output
    assert "VACUUM" in done.stdout and "PRAGMA wal_checkpoint(TRUNCATE)" in done.stdout and "->" in done.stdout
    monkeypatch.setenv("VACUUM_FREE_MARGIN_MB", str(10**12))
    refused = gatehouse("db", "maintain", "--vacuum")
    assert refused.exit_code == 1
    assert "VACUUM needs about" in refused.stderr and "Traceback" not in refused.output


def gatehouse(*args: str) -> Result:
    """Run a command in this process, with the settings read afresh from the environment."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        get_settings.cache_clear()
