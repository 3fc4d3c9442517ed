"""An export of 1,000,000 request-log rows completes with bounded memory: `gatehouse export` in its own process,
its peak RSS against a 100,000-row export of the same table, and the ZIP holds every row."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import BACKENDS, fresh_database
from tests.support.server import base_env

SMALL, LARGE = 100_000, 1_000_000
GROWTH_LIMIT_MB = 25  # the 1M-row export may peak at most this much above the 100k-row one
PEAK_LIMIT_MB = 200

COLUMNS = (
    "created_at, request_id, user_id, key_id, endpoint, protocol, model, upstream, stream, status_code, "
    "error_code, prompt_tokens, completion_tokens, usage_reported, latency_ms, ttft_ms"
)
SQLITE_FILL = f"""
WITH RECURSIVE n(x) AS (SELECT :start UNION ALL SELECT x + 1 FROM n WHERE x < :stop)
INSERT INTO request_log ({COLUMNS})
SELECT printf('2026-11-%02d %02d:%02d:%02d.%06d', 1 + x % 28, x / 3600 % 24, x / 60 % 60, x % 60, x % 1000000),
       lower(hex(randomblob(16))), 1 + x % 50, 1 + x % 80, 'chat', 'openai', 'llama3.1:8b-instruct', 'gpu-1',
       x % 2, 200, NULL, 20 + x % 500, 100 + x % 900, 1, 120.5 + x % 1000, 35.25
FROM n
"""
POSTGRES_FILL = f"""
INSERT INTO request_log ({COLUMNS})
SELECT timestamptz '2026-11-01 00:00:00+00' + x * interval '1 second', md5(x::text), 1 + x % 50, 1 + x % 80,
       'chat', 'openai', 'llama3.1:8b-instruct', 'gpu-1', x % 2 = 0, 200, NULL, 20 + x % 500, 100 + x % 900,
       true, 120.5 + x % 1000, 35.25
FROM generate_series($1::bigint, $2::bigint) AS x
"""


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, url) of a fresh, migrated database."""
    with fresh_database(request.param, tmp_path) as url:
        done = _gatehouse(url, tmp_path, "db", "upgrade")
        assert done.returncode == 0, done.stderr
        yield request.param, url


def _env(url: str, workdir: Path) -> dict[str, str]:
    return base_env(url, workdir / "data", COLUMNS="200")


def _gatehouse(url: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatehouse", *args],
        env=_env(url, workdir),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fill(kind: str, url: str, start: int, stop: int) -> None:
    """Insert request-log rows start..stop (inclusive) in one statement."""
    if kind == "sqlite":
        database = make_url(url).database
        assert database
        with sqlite3.connect(database) as connection:
            connection.execute(SQLITE_FILL, {"start": start, "stop": stop})
        return

    async def insert() -> None:
        import asyncpg

        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(POSTGRES_FILL, start, stop)
            await connection.execute("ANALYZE request_log")
        finally:
            await connection.close()

    asyncio.run(insert())


# The peak is read inside the export's own process, from its memory map's high-water mark (VmHWM) at exit: the
# kernel's ru_maxrss (wait4, RUSAGE_CHILDREN) also counts the parent's pages the child had before exec, which
# for a pytest process that ran other tests first is more than the export itself.
PEAK_PROBE = """
import atexit, sys

def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"VmHWM {peak}\\n")

atexit.register(report)
sys.argv = ["gatehouse", *sys.argv[1:]]
from gatehouse.entry import main
main()
"""


def export_peak(url: str, workdir: Path, out: Path) -> tuple[int, float]:
    """Run `gatehouse export --entities requests` in its own process: (its peak RSS in bytes, seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, "export", "--entities", "requests", "--out", str(out)],
        env=_env(url, workdir),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    peak_kib = int(done.stderr.rsplit("VmHWM ", 1)[1].split()[0])
    return peak_kib * 1024, time.monotonic() - started


def count_lines(path: Path, name: str) -> int:
    """Lines in one file of the ZIP, read in chunks (never the whole file in memory)."""
    lines = 0
    with zipfile.ZipFile(path) as archive, archive.open(name) as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_an_export_of_a_million_requests_has_bounded_memory(
    database: tuple[str, str], tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    kind, url = database
    fill(kind, url, 1, SMALL)
    small_peak, small_seconds = export_peak(url, tmp_path, tmp_path / "small.zip")
    fill(kind, url, SMALL + 1, LARGE)
    large_peak, large_seconds = export_peak(url, tmp_path, tmp_path / "large.zip")

    mb = 1024 * 1024
    report = (
        f"{kind}: peak RSS {small_peak / mb:.1f} MB for {SMALL:,} rows ({small_seconds:.1f} s), "
        f"{large_peak / mb:.1f} MB for {LARGE:,} rows ({large_seconds:.1f} s)"
    )
    print(report)
    record_property("export_peak_rss", report)

    with zipfile.ZipFile(tmp_path / "large.zip") as archive:
        manifest = orjson.loads(archive.read("manifest.json"))
    assert manifest["entities"]["requests"]["rows"] == LARGE
    assert count_lines(tmp_path / "large.zip", "requests.csv") == LARGE + 1  # and the header
    assert large_peak < small_peak + GROWTH_LIMIT_MB * mb, report
    assert large_peak < PEAK_LIMIT_MB * mb, report
