"""LOG_FILE: JSON lines in a file that rotates weekly (Mondays, 00:00 UTC), with rotated weeks gzipped and
deleted after KEEP_DAYS; safe with several processes appending to the same file."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import logging
import logging.handlers
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

KEEP_DAYS = 30  # rotated LOG_FILE files last written longer ago than this are deleted
HOUSEKEEPING_SECONDS = 3600.0  # how often a writer looks for rotated files to compress or delete


class LogFileError(SystemExit):
    """LOG_FILE cannot be written: startup stops with one line naming the setting (never a traceback)."""


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
