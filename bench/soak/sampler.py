"""RSS (VmRSS of /proc/<pid>/status) and open files (/proc/<pid>/fd) of each replica's process tree, every N seconds."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from bench.procstat import rss_kb, tree
from bench.soak.report import Sample


def open_files(pids: list[int]) -> int:
    """Open file descriptors of the processes (sockets included)."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def sample(pid: int, at: float) -> Sample:
    """One replica's resources now."""
    pids = tree(pid)
    return Sample(at=at, rss_kb=rss_kb(pids), open_files=open_files(pids))


async def sample_every(
    seconds: float,
    pids: Callable[[], dict[str, int | None]],
    out: dict[str, list[Sample]],
    started: float,
    stop: asyncio.Event,
) -> None:
    """Append a sample of each replica to `out[name]` every `seconds` until `stop` (a replica gone is skipped)."""
    while True:
        at = time.monotonic() - started
        for name, pid in pids().items():
            if pid is not None:
                out.setdefault(name, []).append(await asyncio.to_thread(sample, pid, at))
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
            return
        except TimeoutError:
            continue
