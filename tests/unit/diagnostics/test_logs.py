"""`gatehouse logs` on LOG_FILE as the real handler writes and rotates it: the weeks in order (gzipped ones read
transparently), every filter, --follow across a rotation, the readable form, and the errors that say what to do."""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from typer.testing import CliRunner, Result

from gatehouse.cli import app
from gatehouse.core.logfile import WeeklyFileHandler
from gatehouse.core.logging import configure_logging, get_logger
from gatehouse.diagnostics.logfiles import follow, log_parts
from gatehouse.diagnostics.logfilter import LogFilter, log_lines, parse_when
from gatehouse.settings import get_settings
from tests.conftest import make_settings

MEMORY_DB = "sqlite+aiosqlite:///:memory:"


@pytest.fixture(autouse=True)
def plain_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings from this test's environment only; logging back to stderr only afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOG_FILE", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    structlog.contextvars.clear_contextvars()
    configure_logging(make_settings(MEMORY_DB, tmp_path))


def gatehouse(*args: str) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args))


def events(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [orjson.loads(line)["event"] for line in result.stdout.splitlines()]


def line(stamp: datetime, event: str, level: str = "info", **fields: Any) -> str:
    """A log line as core/logging.py writes it (structlog's ISO timestamp in UTC)."""
    iso = stamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"event": event, "level": level, "timestamp": iso, **fields}).decode()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rotate_at(handler: WeeklyFileHandler, monday: str, first_line: str) -> None:
    """Rotate as the handler does when a week ends: the boundary (a Monday, 00:00 UTC) has passed when a line
    comes; the file is renamed after the week that ended and the line starts the new file."""
    handler.rolloverAt = int(at(monday).timestamp())
    handler.emit_line(first_line)


@pytest.fixture
def three_weeks(tmp_path: Path) -> Path:
    """LOG_FILE with two rotated, gzipped weeks (16 and 23 November) and the current week's file."""
    path = tmp_path / "logs" / "gatehouse.log"
    path.parent.mkdir()
    handler = WeeklyFileHandler(path)
    try:
        handler.emit_line(line(at("2026-11-17T09:00:00"), "request", request_id="r-old", user_id=7, path="/v1/models"))
        handler.emit_line(line(at("2026-11-18T09:00:00"), "upstream_failed", "warning", upstream="ollama"))
        rotate_at(handler, "2026-11-23", line(at("2026-11-24T10:00:00"), "request", request_id="r-mid", user_id=8))
        handler.emit_line(line(at("2026-11-25T10:00:00"), "upstream_timeout", "error", request_id="r-mid", user_id=8))
        handler.emit_line("2026-11-25 10:00:01 [info] a console line without JSON r-mid")
        rotate_at(handler, "2026-11-30", line(at("2026-12-01T08:00:00"), "request", request_id="r-new", user_id=7))
        handler.emit_line(line(at("2026-12-02T08:00:00"), "unhandled_error", "error", request_id="r-new", user_id=7))
        handler.emit_line(line(at("2026-12-03T08:00:00"), "replica_started", "info"))
        handler.housekeep()  # gzips the rotated weeks, as the handler's thread does
    finally:
        handler.close()
    # The rotated weeks keep the time of their last line (compression keeps mtime; --since skips by it).
    os.utime(path.parent / "gatehouse.log.2026-11-16.gz", (at("2026-11-22T23:00").timestamp(),) * 2)
    os.utime(path.parent / "gatehouse.log.2026-11-23.gz", (at("2026-11-29T23:00").timestamp(),) * 2)
    return path


def test_rotated_weeks_are_read_in_order_gzipped_or_not(three_weeks: Path) -> None:
    names = [part.path.name for part in log_parts(three_weeks)]
    assert names == ["gatehouse.log.2026-11-16.gz", "gatehouse.log.2026-11-23.gz", "gatehouse.log"]
    result = gatehouse("logs", "--file", str(three_weeks))
    assert events(result) == [
        "request",
        "upstream_failed",
        "request",
        "upstream_timeout",
        "request",
        "unhandled_error",
        "replica_started",
    ]
    assert "left out (1)" in result.stderr and "--grep" in result.stderr  # the console line, and why


def test_filters(three_weeks: Path) -> None:
    file = ("--file", str(three_weeks))
    assert events(gatehouse("logs", *file, "--level", "warning")) == [
        "upstream_failed",
        "upstream_timeout",
        "unhandled_error",
    ]
    assert events(gatehouse("logs", *file, "--level", "ERROR")) == ["upstream_timeout", "unhandled_error"]
    assert events(gatehouse("logs", *file, "--request-id", "r-mid")) == ["request", "upstream_timeout"]
    assert events(gatehouse("logs", *file, "--user", "7")) == ["request", "request", "unhandled_error"]
    assert events(gatehouse("logs", *file, "--event", "upstream_*", "--event", "replica_started")) == [
        "upstream_failed",
        "upstream_timeout",
        "replica_started",
    ]
    since = gatehouse("logs", *file, "--since", "2026-11-25T00:00", "--until", "2026-12-02T08:00:00Z")
    assert events(since) == ["upstream_timeout", "request", "unhandled_error"]
    # Criteria combine: a user's errors since a day.
    assert events(gatehouse("logs", *file, "--user", "7", "--level", "error", "--since", "2026-11-20")) == [
        "unhandled_error"
    ]


def test_grep_also_passes_lines_that_are_not_json(three_weeks: Path) -> None:
    result = gatehouse("logs", "--file", str(three_weeks), "--grep", "R-MID")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [orjson.loads(text)["event"] for text in lines[:2]] == ["request", "upstream_timeout"]
    assert lines[2] == "2026-11-25 10:00:01 [info] a console line without JSON r-mid"
    assert "left out" not in result.stderr


def test_since_skips_weeks_last_written_before_it(three_weeks: Path) -> None:
    criteria = LogFilter(since=at("2026-11-30T00:00"))
    raw = list(log_lines(log_parts(three_weeks), criteria))  # the files read, before any line is filtered
    assert [orjson.loads(text)["event"] for text in raw] == ["request", "unhandled_error", "replica_started"]


def test_relative_times_and_the_readable_form(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    handler = WeeklyFileHandler(path)
    now = datetime.now(UTC)
    handler.emit_line(line(now - timedelta(hours=3), "request", request_id="r1", status=200))
    handler.emit_line(
        line(now - timedelta(minutes=20), "request", request_id="r2", user_id=4, method="GET", path="/v1/models")
    )
    handler.emit_line(
        line(
            now - timedelta(minutes=5),
            "unhandled_error",
            "error",
            request_id="r3",
            exception="Traceback (most recent call last):\n  File x\nValueError: boom",
        )
    )
    handler.close()
    assert events(gatehouse("logs", "--file", str(path), "--since", "1h")) == ["request", "unhandled_error"]
    assert events(gatehouse("logs", "--file", str(path), "--since", "30m", "--until", "10m")) == ["request"]

    text = gatehouse("logs", "--file", str(path), "--since", "1h", "--text")
    assert text.exit_code == 0, text.output
    first, second, *trace = text.stdout.splitlines()
    stamp = (now - timedelta(minutes=20)).strftime("%Y-%m-%d %H:%M")
    assert first.startswith(stamp) and "INFO" in first and "request request_id=r2 user_id=4 method=GET" in first
    assert "ERROR" in second and "unhandled_error request_id=r3" in second and "exception" not in second
    assert trace == ["    Traceback (most recent call last):", "      File x", "    ValueError: boom"]
    assert "\x1b[" not in text.stdout  # no colours when not on a terminal


def test_lines_from_the_real_logging_setup_with_context(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    configure_logging(make_settings(MEMORY_DB, tmp_path, log_file=path))
    log = get_logger("gatehouse.test")
    structlog.contextvars.bind_contextvars(request_id="req-1", user_id=12)
    log.info("request", method="POST", status=200)
    log.warning("upstream_slow", upstream="ollama")
    structlog.contextvars.clear_contextvars()
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, WeeklyFileHandler))
    handler.doRollover()  # last week, as the handler rotates it
    log.error("other_request_failed")
    handler.wait_housekeeping(10)
    assert [p.path.name.endswith(".gz") for p in log_parts(path)] == [True, False]
    assert events(gatehouse("logs", "--file", str(path), "--user", "12", "--level", "warning")) == ["upstream_slow"]
    assert events(gatehouse("logs", "--file", str(path), "--request-id", "req-1")) == ["request", "upstream_slow"]
    assert events(gatehouse("logs", "--file", str(path), "--event", "*_failed")) == ["other_request_failed"]


def test_follow_picks_up_appended_lines_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    handler = WeeklyFileHandler(path)
    handler.emit_line(line(datetime.now(UTC), "before"))  # already there: follow starts at the end
    got: list[str] = []
    deadline = time.monotonic() + 15

    def write() -> None:
        time.sleep(0.3)
        handler.emit_line(line(datetime.now(UTC), "one"))
        handler.rolloverAt = int(time.time()) - 1  # the week ends: the next line rotates the file
        handler.emit_line(line(datetime.now(UTC), "two"))
        time.sleep(0.3)
        handler.emit_line(line(datetime.now(UTC), "three"))

    writer = threading.Thread(target=write)
    writer.start()
    for text in follow(path, stop=lambda: len(got) >= 3 or time.monotonic() > deadline, poll_seconds=0.05):
        got.append(orjson.loads(text)["event"])
    writer.join()
    handler.close()
    assert got == ["one", "two", "three"]
    assert len(log_parts(path)) == 2  # it did rotate


def test_follow_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    handler = WeeklyFileHandler(path)
    handler.emit_line(line(datetime.now(UTC), "wanted", request_id="last-week"))
    handler.doRollover()
    handler.emit_line(line(datetime.now(UTC), "wanted", request_id="this-week"))
    env = {k: v for k, v in os.environ.items() if k != "LOG_FILE"}
    command = [sys.executable, "-m", "gatehouse", "logs", "--file", str(path), "--follow", "--event", "wanted"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    lines: queue.Queue[bytes] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def read() -> None:
        for raw in iter(stdout.readline, b""):
            lines.put(raw)

    threading.Thread(target=read, daemon=True).start()
    try:
        # The history first: last week's rotated file, then the current one.
        assert orjson.loads(lines.get(timeout=60))["request_id"] == "last-week"
        assert orjson.loads(lines.get(timeout=10))["request_id"] == "this-week"
        handler.emit_line(line(datetime.now(UTC), "unwanted"))
        handler.emit_line(line(datetime.now(UTC), "wanted", request_id="new"))
        assert orjson.loads(lines.get(timeout=10))["request_id"] == "new"
    finally:
        process.terminate()
        process.wait(10)
        handler.close()


def test_without_log_file_it_says_where_logs_are(tmp_path: Path) -> None:
    result = gatehouse("logs", "--since", "1h")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "LOG_FILE is not set" in message and "--file" in message
    assert "journalctl -u gatehouse" in message and "kubectl logs" in message


def test_bad_input_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FILE", str(tmp_path / "nowhere" / "gatehouse.log"))
    missing = gatehouse("logs")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.output
    bad = gatehouse("logs", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.stderr and "30m" in bad.stderr
    level = gatehouse("logs", "--level", "loud")
    assert level.exit_code == 2 and "--level" in level.stderr
    with pytest.raises(ValueError, match="ISO time"):
        parse_when("3 fortnights")
