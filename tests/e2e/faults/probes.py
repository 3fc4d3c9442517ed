"""What the matrix reads off the running processes: the server's memory (VmRSS), its TCP connections to a port
(its own sockets, from /proc/<pid>/fd and /proc/<pid>/net/tcp), its /metrics gauges, and its upstreams' in-flight
counts; and a check that every request has let go of everything once it is over."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.gateway.models import RequestLog
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import GatehouseServer

ESTABLISHED = "01"


def rss_bytes(pid: int) -> int:
    """The resident memory of a process (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def connections_to(pid: int, port: int) -> int:
    """How many established TCP connections process `pid` holds to `port` (on any address)."""
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == ESTABLISHED and fields[9] in inodes:
                count += 1
    return count


def metric(server: GatehouseServer, name: str) -> float | None:
    """The value of an unlabelled metric from /metrics (None when it is not exported)."""
    text = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {server.admin_key}"}).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def upstreams_inflight(server: GatehouseServer) -> dict[str, int]:
    """The requests each upstream has in flight on this server, by name (GET /admin/upstreams)."""
    with server.client() as admin:
        return {u["name"]: u["inflight"] for u in admin.get("/admin/upstreams").json()}


def wait_until(check: object, what: str, timeout: float = 10.0) -> None:
    """Poll `check()` until it is true; fail naming `what` and its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()  # type: ignore[operator]
        if value is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.1)


def assert_nothing_left(server: GatehouseServer, upstream: FakeUpstream, *, tasks_before: float | None) -> None:
    """After the requests are over: no stream or upstream request in flight on either side, no connection to the
    upstream beyond its idle pool, and the event loop back to the tasks it had before."""

    def settled() -> object:
        live = metric(server, "gatehouse_active_streams")
        inflight = {k: v for k, v in upstreams_inflight(server).items() if v}
        fake = upstream.stats()["in_flight"]
        if live == 0 and not inflight and fake == 0:
            return True
        return {"active_streams": live, "upstream_inflight": inflight, "fake_in_flight": fake}

    wait_until(settled, "requests still in flight")
    # Every connection still open is an idle one of a pool: the fake serves none of them (in_flight 0 above).
    # The pools are bounded by what ran at once; a leak would grow past it.
    assert connections_to(server.process.pid, upstream.port) <= 64
    if tasks_before is not None:
        # A task per open connection (the clients' keep-alives close within seconds) comes and goes; a leaked one
        # per request would not.
        wait_until(
            lambda: (
                (metric(server, "gatehouse_event_loop_tasks") or 0) <= tasks_before + 4
                or metric(server, "gatehouse_event_loop_tasks")
            ),
            "asyncio tasks left behind",
        )


async def _rows(server: GatehouseServer, models: set[str]) -> list[Any]:
    engine = create_async_engine(server.env["DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(RequestLog).where(RequestLog.model.in_(models)))
            return list(rows.all())
    finally:
        await engine.dispose()


def logged_rows(server: GatehouseServer, models: set[str], count: int) -> list[Any]:
    """The request-log rows of `models`, once `count` are written (the log is flushed in batches)."""
    deadline = time.monotonic() + 10
    while True:
        rows = asyncio.run(_rows(server, models))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)
