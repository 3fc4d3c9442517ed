"""DATA_DIR/gatehouse.pid: written by `gatehouse serve` (removed at exit), read by `gatehouse reload` to send
SIGHUP to the local server when there is no Redis to carry Signal.CONFIG_RELOAD."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PID_FILE = "gatehouse.pid"


@dataclass(frozen=True)
class Served:
    """The serving process: its pid, and how many uvicorn workers it runs."""

    pid: int
    workers: int


def pid_path(data_dir: Path) -> Path:
    return data_dir / PID_FILE


@contextlib.contextmanager
def pid_file(data_dir: Path, *, workers: int) -> Iterator[Path]:
    """Write this process's pid (and its worker count) while the block runs; removed afterwards, if still ours."""
    path = pid_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\nworkers={workers}\n")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if read_pid_file(data_dir) == Served(os.getpid(), workers):
                path.unlink()


def read_pid_file(data_dir: Path) -> Served | None:
    """The serving process the pid file names; None when there is none, or it is unreadable."""
    try:
        lines = pid_path(data_dir).read_text().split()
        pid = int(lines[0])
        workers = int(lines[1].removeprefix("workers=")) if len(lines) > 1 else 1
    except (OSError, ValueError, IndexError):
        return None
    return Served(pid, workers)
