"""Structured logging: JSON lines (or console in development) on stderr, and JSON lines in LOG_FILE when set
(rotated weekly, gzipped, kept 30 days), with the request's context (request_id, user_id, stream_id)."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import logging
import logging.handlers
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog

from gatehouse.settings import LogFormat, Settings

# Keys whose values must never be logged, whatever a caller passes by mistake.
REDACTED_KEYS = frozenset(
    {
        "password",
        "api_key",
        "key",
        "token",
        "authorization",
        "cookie",
        "secret",
        "messages",
        "content",
        "prompt",
        "input",
        "session_token",
    }
)
KEEP_DAYS = 30  # rotated LOG_FILE files last written longer ago than this are deleted
HOUSEKEEPING_SECONDS = 3600.0  # how often a writer looks for rotated files to compress or delete
# Their statements' parameters (SQLAlchemy's INFO, aiosqlite's DEBUG) and raw protocol traces (httpcore's DEBUG)
# carry data: hash inputs, emails, headers. They stay quiet even at LOG_LEVEL=DEBUG.
QUIET_LOGGERS = {
    "sqlalchemy": logging.WARNING,
    "aiosqlite": logging.INFO,
    "asyncpg": logging.INFO,
    "httpcore": logging.INFO,
}

Renderer = Callable[[Any, str, MutableMapping[str, Any]], str | bytes]


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in REDACTED_KEYS.intersection(event):
        event[name] = "[redacted]"
    return event


def _dumps(event: Any, **kw: Any) -> str:
    """orjson, several times faster than json; json for what orjson refuses (e.g. integers beyond 64 bits)."""
    try:
        return orjson.dumps(event, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event, default=repr)


SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _redact,
]
JSON_RENDERER: Renderer = structlog.processors.JSONRenderer(serializer=_dumps)


class LogFileError(SystemExit):
    """LOG_FILE cannot be written: startup stops with one line naming the setting (never a traceback)."""


# --- handlers: stdlib records and structlog's lines go through the same ones --------------------------------


class TerminalHandler(logging.StreamHandler[TextIO]):
    """stderr: stdlib records through its formatter, structlog's already rendered lines as they are."""

    def emit_line(self, line: str) -> None:
        """Write one rendered line."""
        self.acquire()
        try:
            with contextlib.suppress(Exception):  # a broken stderr must not fail the request that logs
                self.stream.write(line + "\n")
                self.flush()
        finally:
            self.release()


class WeeklyFileHandler(logging.handlers.TimedRotatingFileHandler):
    """LOG_FILE: JSON lines, rotated on Mondays at 00:00 UTC to `<name>.<week's Monday>`, rotated files gzipped
    and deleted once last written more than KEEP_DAYS ago.

    Several processes append to the same file (`gatehouse serve --workers N`, or replicas sharing a host), each
    with its own handler. Their appends need no coordination: each line is one write() to a file opened with
    O_APPEND. Rotation does: each process would rename the file in turn, and the second rename would replace
    the first one's week with a few seconds of lines. So every append holds a shared flock on the file and
    checks the rotation time under it, and a rotation holds the exclusive flock and renames only when the path
    still names the file this process has open; when it names another, a peer rotated first and this process
    just reopens the path (WatchedFileHandler's way). As every append checks the time under the lock, nobody
    writes to a renamed file once its rotation released the lock: it can be compressed at once. Compression
    and expiry run in a thread, so a large week does not stall the event loop, and they tolerate peers doing
    the same at the same time (each compresses to its own temporary file; the result is identical).
    """

    def __init__(self, path: Path, *, keep_days: int = KEEP_DAYS) -> None:
        super().__init__(path, when="W0", utc=True, encoding="utf-8")
        self.keep_seconds = keep_days * 86400.0
        self.housekeeper: threading.Thread | None = None
        self._housekeeping_lock = threading.Lock()
        self._housekeeping_due = False
        self._housekeeping_at = 0.0  # the first line looks for leftovers of earlier runs
        directory, base = os.path.split(self.baseFilename)
        self._directory = directory
        self._rotated = re.compile(re.escape(base) + r"\.\d{4}-\d{2}-\d{2}(?:\.\d+)?(?:\.gz)?")
        self._partial = re.compile(re.escape(base) + r"\.\d{4}-\d{2}-\d{2}(?:\.\d+)?\.gz\.\d+\.tmp")

    def emit(self, record: logging.LogRecord) -> None:
        """A stdlib record (Handler.handle holds the handler's lock)."""
        try:
            self._append(self.format(record))
        except Exception:
            self.handleError(record)

    def emit_line(self, line: str) -> None:
        """A line structlog rendered."""
        self.acquire()
        try:
            self._append(line)
        except Exception as exc:  # a full disk must not fail the request that logs; stderr still has the line
            _report(f"cannot write LOG_FILE {self.baseFilename}: {exc}")
        finally:
            self.release()

    def _append(self, line: str) -> None:
        for _ in range(2):
            stream = self.stream
            if stream is None:  # closed (being replaced by a new configuration)
                return
            fcntl.flock(stream, fcntl.LOCK_SH)
            try:
                now = time.time()
                if now < self.rolloverAt:
                    stream.write(line + "\n")
                    stream.flush()  # before the lock goes: a peer's rotation must not split the line
                    break
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)
            try:
                self.doRollover()
            except OSError as exc:  # the line still goes to the current file (the next rotation is next week)
                _report(f"cannot rotate LOG_FILE {self.baseFilename}: {exc}")
        if now >= self._housekeeping_at:
            self.start_housekeeping()

    def doRollover(self) -> None:
        """Rotate now (or reopen, when a peer process already rotated), then compress and expire in a thread."""
        old = self.stream
        if old is None:  # closed
            return
        fcntl.flock(old, fcntl.LOCK_EX)
        try:
            if _names(self.baseFilename, old):
                os.rename(self.baseFilename, self._rotated_name())
            self.stream = self._open()
        finally:
            # Even when the rename failed: retried next week rather than before every line.
            self.rolloverAt = self.computeRollover(int(time.time()))
            fcntl.flock(old, fcntl.LOCK_UN)
        old.close()
        self._housekeeping_at = 0.0

    def _rotated_name(self) -> str:
        """`<name>.<Monday of the week it holds>`, with `.1`, `.2`... when rotated more than once that week."""
        week = time.strftime("%Y-%m-%d", time.gmtime(self.rolloverAt - self.interval))
        name = f"{self.baseFilename}.{week}"
        candidate, serial = name, 0
        while os.path.exists(candidate) or os.path.exists(candidate + ".gz"):
            serial += 1
            candidate = f"{name}.{serial}"
        return candidate

    def computeRollover(self, currentTime: int) -> int:
        """The next Monday, 00:00 UTC (the stdlib's "W0" is Tuesday, 00:00: the end of Monday)."""
        days = currentTime // 86400
        monday = days - (days + 3) % 7  # 1970-01-01 was a Thursday
        return (monday + 7) * 86400

    def start_housekeeping(self) -> None:
        """Compress and expire rotated files in a background thread (one at a time; once more if it is busy)."""
        self._housekeeping_at = time.time() + HOUSEKEEPING_SECONDS
        with self._housekeeping_lock:
            self._housekeeping_due = True
            if self.housekeeper is None:
                self.housekeeper = threading.Thread(target=self._housekeeping, name="log-housekeeping", daemon=True)
                self.housekeeper.start()

    def wait_housekeeping(self, timeout: float | None = None) -> None:
        """Wait for the background compression and expiry (tests, and whoever wants them done)."""
        thread = self.housekeeper
        if thread is not None:
            thread.join(timeout)

    def _housekeeping(self) -> None:
        while True:
            with self._housekeeping_lock:
                if not self._housekeeping_due:
                    self.housekeeper = None
                    return
                self._housekeeping_due = False
            self.housekeep()

    def housekeep(self) -> None:
        """Delete rotated files last written more than KEEP_DAYS ago (their mtime; compression keeps it), and
        gzip the others."""
        now = time.time()
        try:
            names = os.listdir(self._directory)
        except OSError as exc:
            _report(f"cannot list the LOG_FILE directory {self._directory}: {exc}")
            return
        for name in sorted(names):
            path = os.path.join(self._directory, name)
            try:
                if self._rotated.fullmatch(name):
                    if os.stat(path).st_mtime < now - self.keep_seconds:
                        os.unlink(path)
                    elif not name.endswith(".gz"):
                        _compress(path)
                elif self._partial.fullmatch(name) and os.stat(path).st_mtime < now - HOUSEKEEPING_SECONDS:
                    os.unlink(path)  # left by a process that stopped while compressing
            except FileNotFoundError:
                pass  # a peer process got there first
            except OSError as exc:
                _report(f"cannot compress or delete the rotated log file {path}: {exc}")


def _names(path: str, stream: Any) -> bool:
    """Whether `path` still names the open file `stream`."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(stream.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _compress(path: str) -> None:
    """`path` -> `path.gz` with the same mtime (its age), then `path` goes."""
    partial = f"{path}.gz.{os.getpid()}.tmp"
    with open(path, "rb") as source:
        times = os.fstat(source.fileno())
        with gzip.open(partial, "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
    os.utime(partial, (times.st_atime, times.st_mtime))
    os.replace(partial, path + ".gz")
    os.unlink(path)


def _report(message: str) -> None:
    """A problem with the log file itself, told on stderr (logging it could fail the same way)."""
    with contextlib.suppress(Exception):
        sys.stderr.write(f"gatehouse: {message}\n")


def open_log_file(path: Path) -> WeeklyFileHandler:
    """The LOG_FILE handler; LogFileError, naming the setting, when the file cannot be created or written."""
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return WeeklyFileHandler(path)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LogFileError(
            f"Gatehouse will not start: LOG_FILE={path} cannot be opened for writing ({reason}). "
            "Point LOG_FILE at a writable path, or unset it to log to stderr only."
        ) from None


# --- structlog's end of the pipeline --------------------------------------------------------------------


class _Render:
    """structlog's last processor: the terminal's line and, when it is not JSON, LOG_FILE's JSON line too.

    One instance, reconfigured in place: loggers cached on first use keep following the configuration.
    """

    def __init__(self) -> None:
        self.terminal: Renderer = JSON_RENDERER
        self.file: Renderer | None = None

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if self.file is None:
            return self.terminal(logger, method, event)
        file_line = self.file(logger, method, event)  # first: the console renderer consumes the dict
        return (self.terminal(logger, method, event), file_line), {}


class _Writer:
    """structlog's logger: hands each rendered line to the handlers stdlib records go through (no LogRecord,
    no caller lookup: a line costs a few microseconds). One instance, its handlers swapped on reconfiguration."""

    def __init__(self) -> None:
        self.terminal: TerminalHandler | None = None
        self.file: WeeklyFileHandler | None = None

    def msg(self, line: str, file_line: str | None = None) -> None:
        """Write one event."""
        terminal, file = self.terminal, self.file
        if terminal is not None:
            terminal.emit_line(line)
        if file is not None:
            file.emit_line(line if file_line is None else file_line)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


_RENDER = _Render()
_WRITER = _Writer()


def _writer(*_args: Any) -> _Writer:
    return _WRITER


def _formatter(renderer: Renderer) -> logging.Formatter:
    # format_exc_info here too: a stdlib record's traceback (uvicorn, asyncio) becomes text in the line,
    # not "<traceback object>".
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging through the same handlers (stderr; LOG_FILE too) at LOG_LEVEL.

    Raises LogFileError, leaving the previous configuration in place, when LOG_FILE cannot be written.
    """
    level = getattr(logging, settings.log_level)
    file = open_log_file(settings.log_file) if settings.log_file is not None else None
    terminal_renderer: Renderer = JSON_RENDERER
    if settings.log_format is LogFormat.CONSOLE:
        terminal_renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    terminal = TerminalHandler(sys.stderr)
    terminal.setFormatter(_formatter(terminal_renderer))
    handlers: list[logging.Handler] = [terminal]
    if file is not None:
        file.setFormatter(_formatter(JSON_RENDERER))  # the file is for machines: JSON, whatever LOG_FORMAT says
        handlers.append(file)

    _RENDER.terminal = terminal_renderer
    _RENDER.file = JSON_RENDERER if file is not None and terminal_renderer is not JSON_RENDERER else None
    previous = _WRITER.file
    _WRITER.terminal, _WRITER.file = terminal, file
    structlog.configure(
        processors=[*SHARED, structlog.processors.format_exc_info, _RENDER],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_writer,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    if previous is not None:
        previous.close()
    # uvicorn's own access log duplicates ours (which has request ids); its errors still come through.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic narrates every migration context at INFO (also on each readiness probe).
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, floor))


def bind_context(**values: Any) -> None:
    """Add values (user_id, stream_id) to every log line of the current request, the access line included."""
    structlog.contextvars.bind_contextvars(**values)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; context variables (request_id, user_id, stream_id) are merged in."""
    return structlog.get_logger(name)
