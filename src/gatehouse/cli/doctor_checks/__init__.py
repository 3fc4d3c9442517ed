"""`gatehouse doctor`'s checks, callable from anywhere in the CLI (e.g. the support bundle):
`await run_doctor(settings)` -> DoctorReport (`.checks`, `.worst`, `.as_dict()`).

Every check that talks over the network has a short timeout, the groups run concurrently, and a group that
still has not finished by GROUP_DEADLINE is reported as a FAIL: the whole run takes seconds even when
everything is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

from pydantic import SecretStr, ValidationError
from sqlalchemy.engine import make_url

from gatehouse.cli.doctor_checks.backups import backup_checks
from gatehouse.cli.doctor_checks.clock import server_clock, upstream_clock
from gatehouse.cli.doctor_checks.configuration import configuration_checks
from gatehouse.cli.doctor_checks.database import DatabaseFacts, probe_database
from gatehouse.cli.doctor_checks.disk import disk_checks
from gatehouse.cli.doctor_checks.redis_check import RedisFacts, judge_redis, ping_redis
from gatehouse.cli.doctor_checks.report import Check, DoctorReport, Status, failed
from gatehouse.cli.doctor_checks.smoke import SMOKE_TIMEOUT, smoke_checks
from gatehouse.cli.doctor_checks.tls import public_url_certificate, upstream_certificates
from gatehouse.cli.doctor_checks.upstreams import UpstreamFacts, configured_upstreams, probe_upstreams
from gatehouse.settings import Settings
from gatehouse.upstreams.config import ConfigError

__all__ = ["Check", "DoctorReport", "Status", "run_doctor"]

T = TypeVar("T")
_SECRETS: ContextVar[tuple[str, ...]] = ContextVar("doctor_secrets", default=())  # this run's, for _bounded
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
    gateway at `url` (default: PUBLIC_URL) with `key`."""
    started = time.perf_counter()
    _SECRETS.set(_secret_values(settings))
    database = asyncio.create_task(
        _bounded("database", probe_database(settings, wait), lambda failure: DatabaseFacts(checks=[failure]))
    )

    async def redis() -> RedisFacts:
        ping = await ping_redis(settings, wait)  # at once, beside the database check
        return judge_redis(settings, ping, (await database).live_replicas)

    async def upstreams() -> UpstreamFacts:
        facts = await database
        return await probe_upstreams(settings, facts.upstreams, wait)

    async def upstream_tls() -> list[Check]:
        stored = (await database).upstreams
        try:
            urls = [upstream.base_url for upstream in configured_upstreams(settings, stored)[0]]
        except ConfigError:
            return []  # the upstreams check reports it
        return await upstream_certificates(urls, wait, besides=settings.public_url)  # beside their model lists

    redis_task = asyncio.create_task(_bounded("redis", redis(), RedisFacts))
    upstream_task = asyncio.create_task(
        _bounded("upstreams", upstreams(), lambda failure: UpstreamFacts(checks=[failure]))
    )
    public_tls_task = asyncio.create_task(_bounded("tls", public_url_certificate(settings.public_url, wait), _only))
    tls_task = asyncio.create_task(_bounded("tls", upstream_tls(), _one))
    backups_task = asyncio.create_task(_bounded("backups", backup_checks(settings), _one))
    disk_task = asyncio.create_task(_bounded("disk", asyncio.to_thread(disk_checks, settings), _one))
    # --smoke goes to PUBLIC_URL unless told otherwise: the way people reach the gateway, proxy and TLS included.
    smoke_task = asyncio.create_task(_smoke(smoke, url or settings.public_url or None, key, chat_model, embed_model))

    db_facts, redis_facts, upstream_facts = await database, await redis_task, await upstream_task
    checks = [
        *configuration_checks(settings),
        *db_facts.checks,
        redis_facts.check,
        *upstream_facts.checks,
        *await backups_task,
        await public_tls_task,
        *await tls_task,
        *await disk_task,
        server_clock(db_facts.clock_offset, redis_facts.clock_offset, postgres=not settings.is_sqlite),
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
        missing = "--url (GATEHOUSE_URL, or PUBLIC_URL)" if not url else "--key (GATEHOUSE_API_KEY)"
        return [failed("smoke", f"--smoke needs {missing}", f"pass {missing}: the gateway to test and a key for it")]
    work = smoke_checks(url, key, chat_model=chat_model, embed_model=embed_model)
    return await _bounded("smoke", work, _one, deadline=2 * SMOKE_TIMEOUT + GROUP_DEADLINE)


def _one(failure: Check) -> list[Check]:
    return [failure]


def _only(failure: Check) -> Check:
    return failure


async def _bounded(
    name: str, work: Awaitable[T], fallback: Callable[[Check], T], deadline: float = GROUP_DEADLINE
) -> T:
    """`work`'s result; past the deadline, or when a check itself breaks, `fallback` of a FAIL saying so (one
    broken check never hides the others' findings)."""
    try:
        return await asyncio.wait_for(work, deadline)
    except TimeoutError:
        return fallback(
            failed(
                name, f"the {name} checks did not finish within {deadline:g} s", "run doctor again; check what hangs"
            )
        )
    except Exception as exc:  # a check that breaks is a finding, not a traceback
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        if isinstance(exc, ValidationError) and exc.errors():
            error = exc.errors()[0]  # e.g. an env shortcut that makes no valid upstream: name the field
            reason += f": {'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for secret in _SECRETS.get():
            reason = reason.replace(secret, "***")
        return fallback(failed(name, f"the {name} checks could not run ({reason})", "fix what the error names"))


def _secret_values(settings: Settings) -> tuple[str, ...]:
    """Every secret the settings hold (and the database URL's password): never shown in a finding."""
    values = [
        getattr(settings, name).get_secret_value()
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr
    ]
    with contextlib.suppress(Exception):
        values.append(make_url(settings.database_url).password or "")
    return tuple(value for value in values if len(value) >= 4)
