"""Logging: JSON lines on stderr and in LOG_FILE (rotated weekly, gzipped, deleted after 30 days, safe with several
writers), a clear refusal of an unwritable LOG_FILE, and the request's context in every line."""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from gatehouse.core.logfile import KEEP_DAYS, LogFileError, WeeklyFileHandler
from gatehouse.core.logging import configure_logging, get_logger
from tests.conftest import make_settings, running_app
from tests.support.server import base_env

MEMORY_DB = "sqlite+aiosqlite:///:memory:"
DAY = 86400.0


@pytest.fixture(autouse=True)
def plain_logging(tmp_path: Path) -> Iterator[None]:
    """Each test starts from, and leaves, the default configuration (stderr only)."""
    yield
    structlog.contextvars.clear_contextvars()
    configure_logging(make_settings(MEMORY_DB, tmp_path))


def lines_of(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log file (each must parse)."""
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def file_handler() -> WeeklyFileHandler:
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, WeeklyFileHandler)]
    assert len(handlers) == 1
    return handlers[0]


def test_stdlib_tracebacks_are_rendered_as_text(tmp_path: Path) -> None:
    configure_logging(make_settings(MEMORY_DB, tmp_path))
    formatter = logging.getLogger().handlers[0].formatter
    assert formatter is not None
    try:
        raise RuntimeError("it broke")
    except RuntimeError:
        record = logging.LogRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, sys.exc_info()
        )
    line = orjson.loads(formatter.format(record))
    assert line["event"] == "Exception in ASGI application"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "RuntimeError: it broke" in line["exception"]
    assert "<traceback object" not in formatter.format(record)


def test_structlog_and_stdlib_lines_reach_the_file_as_json_with_context(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "deeper" / "gatehouse.log"  # directories are made
    configure_logging(make_settings(MEMORY_DB, tmp_path, log_file=path, log_format="console"))
    structlog.contextvars.bind_contextvars(request_id="req-1", user_id=7)
    get_logger("gatehouse.test").info("something_happened", count=3, password="hunter2", key="gh_abc")
    logging.getLogger("uvicorn.error").warning("Stdlib says %s", "hello")
    first, second = lines_of(path)  # JSON in the file although the terminal gets the console format
    assert first["event"] == "something_happened" and first["count"] == 3
    assert (first["request_id"], first["user_id"], first["level"]) == ("req-1", 7, "info")
    assert first["password"] == first["key"] == "[redacted]"
    assert second["event"] == "Stdlib says hello" and second["request_id"] == "req-1"
    assert "hunter2" not in path.read_text()


def test_a_reconfiguration_moves_cached_loggers_along(tmp_path: Path) -> None:
    log = get_logger("gatehouse.test")
    configure_logging(make_settings(MEMORY_DB, tmp_path, log_file=tmp_path / "one.log"))
    log.info("first")
    configure_logging(make_settings(MEMORY_DB, tmp_path, log_file=tmp_path / "two.log"))
    log.info("second")  # the same (now cached) logger
    assert [line["event"] for line in lines_of(tmp_path / "one.log")] == ["first"]
    assert [line["event"] for line in lines_of(tmp_path / "two.log")] == ["second"]


# --- rotation --------------------------------------------------------------------------------------------


def _rotated(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "gatehouse.log")


def test_rotation_gzips_the_week_and_keeps_writing(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    configure_logging(make_settings(MEMORY_DB, tmp_path, log_file=path))
    handler = file_handler()
    log = get_logger("gatehouse.test")
    log.info("last_week")
    handler.doRollover()
    log.info("this_week")  # also starts the housekeeping thread
    handler.wait_housekeeping(10)
    monday = time.strftime("%Y-%m-%d", time.gmtime(handler.rolloverAt - handler.interval))
    assert _rotated(tmp_path) == [f"gatehouse.log.{monday}.gz"]
    with gzip.open(tmp_path / f"gatehouse.log.{monday}.gz", "rt") as rotated:
        assert [orjson.loads(line)["event"] for line in rotated] == ["last_week"]
    assert [line["event"] for line in lines_of(path)] == ["this_week"]
    # Mondays at 00:00 UTC.
    assert time.gmtime(handler.rolloverAt).tm_wday == 0 and handler.rolloverAt % DAY == 0

    handler.doRollover()  # twice in one week: a second name, nothing overwritten
    log.info("later")
    handler.wait_housekeeping(10)
    assert _rotated(tmp_path) == [f"gatehouse.log.{monday}.1.gz", f"gatehouse.log.{monday}.gz"]


def test_rotation_is_due_when_the_week_is_over(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    configure_logging(make_settings(MEMORY_DB, tmp_path, log_file=path))
    handler = file_handler()
    get_logger("gatehouse.test").info("before")
    handler.rolloverAt = int(time.time()) - 1  # the boundary just passed
    get_logger("gatehouse.test").info("after")
    handler.wait_housekeeping(10)
    assert [line["event"] for line in lines_of(path)] == ["after"]
    assert len(_rotated(tmp_path)) == 1 and _rotated(tmp_path)[0].endswith(".gz")
    assert handler.rolloverAt > time.time()


def test_files_last_written_over_30_days_ago_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    handler = WeeklyFileHandler(path)
    try:
        now = time.time()
        ages = {
            "gatehouse.log.2026-01-05.gz": KEEP_DAYS + 1,  # expired
            "gatehouse.log.2026-01-12": KEEP_DAYS + 0.5,  # expired, never compressed
            "gatehouse.log.2026-02-02.gz": KEEP_DAYS - 1,  # kept
            "gatehouse.log.2026-02-09": 3,  # kept, and compressed
            "gatehouse.log.2026-02-09.gz.123.tmp": 1,  # an interrupted compression: cleared
            "other.log.2026-01-05.gz": 400,  # not ours
        }
        for name, days in ages.items():
            (tmp_path / name).write_text("old\n")
            os.utime(tmp_path / name, (now - days * DAY, now - days * DAY))
        os.utime(path, (now - 400 * DAY, now - 400 * DAY))  # the live file is never deleted, however old
        handler.housekeep()
        assert _rotated(tmp_path) == [
            "gatehouse.log.2026-02-02.gz",
            "gatehouse.log.2026-02-09.gz",
            "other.log.2026-01-05.gz",
        ]
        # Compression keeps the age: the file still expires 30 days after its last line.
        assert abs(os.stat(tmp_path / "gatehouse.log.2026-02-09.gz").st_mtime - (now - 3 * DAY)) < 1
        assert path.exists()
    finally:
        handler.close()


def test_a_peer_process_rotating_first_is_followed_not_repeated(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    mine, peer = WeeklyFileHandler(path), WeeklyFileHandler(path)  # two workers, each with its own handler
    try:
        mine.emit_line('{"event":"mine_before"}')
        peer.emit_line('{"event":"peer_before"}')
        peer.doRollover()  # the peer crosses the week's boundary first...
        peer.emit_line('{"event":"peer_after"}')  # (and compresses the week in the background)
        mine.rolloverAt = int(time.time()) - 1  # ... this process right after it
        mine.emit_line('{"event":"mine_after"}')
        for handler in (mine, peer):
            handler.wait_housekeeping(10)
        (rotated,) = _rotated(tmp_path)  # one rotation, not two
        with gzip.open(tmp_path / rotated, "rt") as week:
            assert [orjson.loads(line)["event"] for line in week] == ["mine_before", "peer_before"]
        assert [line["event"] for line in lines_of(path)] == ["peer_after", "mine_after"]
    finally:
        mine.close()
        peer.close()


def test_several_processes_append_and_rotate_without_losing_lines(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    script = f"""
import sys, time
from pathlib import Path
from gatehouse.core.logfile import WeeklyFileHandler
handler = WeeklyFileHandler(Path({str(path)!r}))
print("ready", flush=True)
boundary = float(sys.stdin.readline())
handler.rolloverAt = boundary  # the end of the week: the same instant for every process
count = 0
while time.time() < boundary + 0.3:
    handler.emit_line('{{"event": "' + sys.argv[1] + '-' + str(count) + '"}}')
    count += 1
    time.sleep(0.0002)
handler.wait_housekeeping(30)
print(count)
"""
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"w{n}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for n in range(3)
    ]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    boundary = f"{time.time() + 0.3}\n"
    counts = [int(writer.communicate(boundary, timeout=60)[0]) for writer in writers]
    assert [w.returncode for w in writers] == [0, 0, 0]
    rotated = [name for name in os.listdir(tmp_path) if name != "gatehouse.log"]
    assert len(rotated) == 1 and rotated[0].endswith(".gz"), rotated  # one rotation, not one per process
    with gzip.open(tmp_path / rotated[0], "rt") as week:
        before = [orjson.loads(line)["event"] for line in week]
    after = [line["event"] for line in lines_of(path)]
    assert before and after
    expected = {f"w{n}-{i}" for n in range(3) for i in range(counts[n])}
    assert len(before) + len(after) == len(expected) and set(before + after) == expected


# --- refusing an unusable LOG_FILE ------------------------------------------------------------------------


def test_unwritable_log_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for bad in (tmp_path, tmp_path / "a-file" / "gatehouse.log"):  # a directory; under a regular file
        with pytest.raises(LogFileError) as refused:
            configure_logging(make_settings(MEMORY_DB, tmp_path, log_file=bad))
        assert f"LOG_FILE={bad}" in str(refused.value)
    assert not any(isinstance(h, WeeklyFileHandler) for h in logging.getLogger().handlers)


def test_serve_with_unwritable_log_file_says_so_without_a_traceback(tmp_path: Path) -> None:
    env = base_env(f"sqlite+aiosqlite:///{tmp_path}/gatehouse.db", tmp_path / "data", LOG_FILE=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "gatehouse", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert f"LOG_FILE={tmp_path} cannot be opened" in result.stderr
    assert "Traceback" not in result.stderr


# --- the request's context --------------------------------------------------------------------------------


async def test_gateway_lines_carry_request_user_and_stream_ids(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.log"
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/gatehouse.db", tmp_path, log_file=path)
    async with running_app(settings) as harness:
        chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
        whole = await harness.client.post("/v1/chat/completions", json=chat, headers={"x-request-id": "whole-1"})
        assert whole.status_code == 200, whole.text
        async with harness.client.stream(
            "POST", "/v1/chat/completions", json={**chat, "stream": True}, headers={"x-request-id": "streamed-1"}
        ) as streamed:
            assert streamed.status_code == 200
            await streamed.aread()
        models = await harness.client.get("/v1/models", headers={"x-request-id": "models-1"})
        assert models.status_code == 200
    access = {line["request_id"]: line for line in lines_of(path) if line["event"] == "request"}
    for request_id in ("whole-1", "streamed-1"):
        line = access[request_id]
        assert line["path"] == "/v1/chat/completions" and line["status"] == 200
        assert isinstance(line["user_id"], int)
        assert isinstance(line.get("stream_id"), str), line
    assert access["whole-1"]["stream_id"] != access["streamed-1"]["stream_id"]
    assert "stream_id" not in access["models-1"] and isinstance(access["models-1"]["user_id"], int)
