"""`gatehouse doctor`'s checks, callable from anywhere in the CLI (e.g. the support bundle):
`await run_doctor(settings)` -> DoctorReport (`.checks`, `.worst`, `.as_dict()`).

Every check that talks over the network has a short timeout, the groups run concurrently, and a group that
still has not finished by GROUP_DEADLINE is reported as a FAIL: the whole run takes seconds even when
everything is down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from gatehouse.cli.doctor_checks.backups import backup_checks
from gatehouse.cli.doctor_checks.clock import server_clock, upstream_clock
from gatehouse.cli.doctor_checks.configuration import configuration_checks
from gatehouse.cli.doctor_checks.database import DatabaseFacts, probe_database
from gatehouse.cli.doctor_checks.disk import disk_checks
from gatehouse.cli.doctor_checks.redis_check import RedisFacts, probe_redis
from gatehouse.cli.doctor_checks.report import Check, DoctorReport, Status, failed
from gatehouse.cli.doctor_checks.smoke import SMOKE_TIMEOUT, smoke_checks
from gatehouse.cli.doctor_checks.tls import certificate_checks
from gatehouse.cli.doctor_checks.upstreams import UpstreamFacts, probe_upstreams
from gatehouse.settings import Settings

__all__ = ["Check", "DoctorReport", "Status", "run_doctor"]

T = TypeVar("T")
NETWORK_TIMEOUT = 3.0  # seconds for each connection or answer (database, Redis, an upstream, a TLS handshake)
GROUP_DEADLINE = 10.0  # a group of checks (e.g. every upstream) that takes longer than this is a FAIL


async def run_doctor(
    settings: Settings,
    *,
    smoke: bool = False,
    url: str | None = None,
    key: str | None = None,
    chat_model: str | None = None,
    embed_model: str | None = None,
    wait: float = NETWORK_TIMEOUT,
) -> DoctorReport:
    """Run every check of the production checklist; with `smoke`, also a chat and an embedding through the
    gateway at `url` with `key`."""
    started = time.perf_counter()
    database = asyncio.create_task(_bounded("database", probe_database(settings, wait), DatabaseFacts()))

    async def redis() -> RedisFacts:
        facts = await database
        return await probe_redis(settings, facts.live_replicas, wait)

    async def upstreams() -> UpstreamFacts:
        facts = await database
        return await probe_upstreams(settings, facts.upstreams, wait)

    redis_task = asyncio.create_task(_bounded("redis", redis(), None))
    upstream_task = asyncio.create_task(_bounded("upstreams", upstreams(), UpstreamFacts()))
    backups_task = asyncio.create_task(_bounded("backups", backup_checks(settings), []))
    smoke_task = asyncio.create_task(_smoke(smoke, url, key, chat_model, embed_model))

    db_facts = await database
    redis_facts = await redis_task
    upstream_facts = await upstream_task
    no_checks: list[Check] = []
    tls = await _bounded("tls", certificate_checks(settings.public_url, upstream_facts.https_urls, wait), no_checks)
    checks = [
        *configuration_checks(settings),
        *db_facts.checks,
        redis_facts.check if isinstance(redis_facts, RedisFacts) else _late("redis"),
        *upstream_facts.checks,
        *await backups_task,
        *tls,
        *disk_checks(settings),
        server_clock(
            db_facts.clock_offset,
            redis_facts.clock_offset if isinstance(redis_facts, RedisFacts) else None,
            postgres=not settings.is_sqlite,
        ),
        upstream_clock(upstream_facts.dates),
        *await smoke_task,
    ]
    return DoctorReport(checks=checks, seconds=time.perf_counter() - started)


async def _smoke(
    smoke: bool, url: str | None, key: str | None, chat_model: str | None, embed_model: str | None
) -> list[Check]:
    if not smoke:
        return []
    if not url or not key:
        missing = "--url (GATEHOUSE_URL)" if not url else "--key (GATEHOUSE_API_KEY)"
        return [failed("smoke", f"--smoke needs {missing}", f"pass {missing}: the gateway to test and a key for it")]
    work = smoke_checks(url, key, chat_model=chat_model, embed_model=embed_model)
    return await _bounded("smoke", work, [], deadline=2 * SMOKE_TIMEOUT + GROUP_DEADLINE)


async def _bounded(name: str, work: Awaitable[T], late: T, deadline: float = GROUP_DEADLINE) -> T:
    """`work`'s result, or `late` (after the group's FAIL is recorded in it, when it holds checks) past the deadline."""
    try:
        return await asyncio.wait_for(work, deadline)
    except TimeoutError:
        if isinstance(late, DatabaseFacts | UpstreamFacts):
            late.checks.append(_late(name, deadline))
        elif isinstance(late, list):
            late.append(_late(name, deadline))
        return late


def _late(name: str, deadline: float = GROUP_DEADLINE) -> Check:
    return failed(name, f"the {name} checks did not finish within {deadline:g} s", "run doctor again; check what hangs")
