"""LOG_FILE and its rotated files, oldest first, read line by line (gzipped ones transparently), and followed.

core/logfile.py rotates `<name>` to `<name>.<YYYY-MM-DD>` (the Monday of the week it holds), `.1`, `.2`... when
a week is rotated more than once, and gzips rotated files (`.gz`); this module reads what that handler writes.
"""

from __future__ import annotations

import gzip
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 64 * 1024
FOLLOW_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class LogPart:
    """One file of a log: the current one, or a rotated week (`week` is its Monday, `serial` its rotation that
    week)."""

    path: Path
    week: str | None = None
    serial: int = 0

    @property
    def current(self) -> bool:
        """Whether this is the file being written (not a rotated one)."""
        return self.week is None


def log_parts(path: Path) -> list[LogPart]:
    """`path`'s rotated files, oldest week first, then `path` itself when it exists (a .gz and a plain copy of one
    week, left while compression runs, count once)."""
    path = path.expanduser()
    pattern = re.compile(re.escape(path.name) + r"\.(\d{4}-\d{2}-\d{2})(?:\.(\d+))?(\.gz)?")
    found: dict[tuple[str, int], LogPart] = {}
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        names = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        key = (match.group(1), int(match.group(2) or 0))
        if key in found and not match.group(3):
            continue  # the plain file is being compressed: the .gz, when there, is complete
        found[key] = LogPart(path.parent / name, week=key[0], serial=key[1])
    parts = [found[key] for key in sorted(found)]
    if path.exists():
        parts.append(LogPart(path))
    return parts


def written_before(part: LogPart, moment: datetime) -> bool:
    """Whether every line of `part` was written before `moment` (its last write was: compression keeps mtime)."""
    try:
        return part.path.stat().st_mtime < moment.timestamp()
    except FileNotFoundError:
        return True


def open_part(path: Path) -> BinaryIO:
    """A file of the log for reading bytes, decompressed when it is gzipped (by its magic number, not its name)."""
    handle = path.open("rb")
    if handle.read(2) == b"\x1f\x8b":
        handle.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def read_lines(path: Path) -> Iterator[str]:
    """The lines of one file, without their newline, a line at a time (never the whole file in memory)."""
    with open_part(path) as handle:
        for raw in handle:
            yield raw.rstrip(b"\r\n").decode("utf-8", errors="replace")


def follow(
    path: Path, *, stop: Callable[[], bool], from_start: bool = False, poll_seconds: float = FOLLOW_POLL_SECONDS
) -> Iterator[str]:
    """Lines appended to `path` from its current end on (`from_start`: every line of it, then those appended, with
    no gap between), as `tail -F` gives them: across a rotation (the rest of the renamed file first, then the new
    file from its start), until `stop()` is true. A line is given once its newline is written (a writer's
    half-written line waits)."""
    handle = _open(path) if from_start else _open_at_end(path)
    pending = b""
    try:
        while not stop():
            chunk = handle.read(CHUNK_BYTES) if handle is not None else b""
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
                continue
            if _replaced(path, handle):
                # Rotated (or created): the rest of the old file (a line may have landed since the read above),
                # then the new one from its start.
                if handle is not None:
                    pending += _drain(handle)
                    handle.close()
                for line in pending.split(b"\n") if pending else []:
                    if line:
                        yield line.rstrip(b"\r").decode("utf-8", errors="replace")
                handle, pending = _open(path), b""
                continue
            time.sleep(poll_seconds)
    finally:
        if handle is not None:
            handle.close()


def _drain(handle: BinaryIO) -> bytes:
    """What is left to read in `handle`."""
    rest = b""
    while chunk := handle.read(CHUNK_BYTES):
        rest += chunk
    return rest


def _open(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _open_at_end(path: Path) -> BinaryIO | None:
    handle = _open(path)
    if handle is not None:
        handle.seek(0, os.SEEK_END)
    return handle


def _replaced(path: Path, handle: BinaryIO | None) -> bool:
    """Whether `path` now names another file than `handle` (rotated, recreated), or exists when it did not."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    if handle is None:
        return True
    opened = os.fstat(handle.fileno())
    if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
        return True
    if named.st_size < handle.tell():  # truncated in place (copytruncate): start over
        handle.seek(0)
    return False
