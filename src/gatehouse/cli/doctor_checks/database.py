"""The database: reachable (timed), at the migration head, fit for the replicas it serves; and what other checks
read from it (the upstreams, live replicas, the bootstrap key, the server's clock)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gatehouse.accounts.bootstrap import BOOTSTRAP_KEY_NAME
from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.users import service as users
from gatehouse.cli.doctor_checks.report import Check, failed, passed, skipped, warned
from gatehouse.db.engine import create_engine, create_sessionmaker, read_only
from gatehouse.db.migrate import current_revisions, head_revisions
from gatehouse.jobs.models import ReplicaBeat
from gatehouse.jobs.replicas import is_live
from gatehouse.settings import Settings
from gatehouse.upstreams.config import UpstreamConfig
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.upstream import config_from_row

ROTATE_BOOTSTRAP = "gatehouse keys rotate-bootstrap"


@dataclass
class DatabaseFacts:
    """What the database check found, for the checks that depend on it."""

    checks: list[Check] = field(default_factory=list)
    reachable: bool = False
    live_replicas: int | None = None  # None: not known (the database did not answer)
    upstreams: list[UpstreamConfig] = field(default_factory=list)  # the stored ones (keys of seeded ones elsewhere)
    clock_offset: float | None = None  # the database server's clock minus this machine's, seconds (PostgreSQL)


async def probe_database(settings: Settings, wait: float) -> DatabaseFacts:
    """Connect (within `wait`), then read the revision, the replicas, the upstreams and the bootstrap key."""
    facts = DatabaseFacts()
    where = describe_database(settings)
    if settings.is_sqlite and not _sqlite_file(settings).exists():
        facts.checks.append(
            failed(
                "database",
                f"{where} does not exist",
                "check DATABASE_URL, or create it with `gatehouse db upgrade` (or start `gatehouse serve` once)",
            )
        )
        return facts
    writer = create_engine(settings)
    engine = read_only(writer)  # doctor only reads: on SQLite it never queues behind a serving process's writes
    try:
        started = time.perf_counter()
        try:
            offset = await asyncio.wait_for(_ping(engine), wait)
        except Exception as exc:  # any failure to connect (refused, bad password, no answer in time) is the finding
            facts.checks.append(
                failed(
                    "database",
                    f"{where} is unreachable: {_reason(exc, settings)}",
                    "check DATABASE_URL (or DB_HOST/DB_PORT/DB_USER/DB_PASSWORD) and that the server runs and "
                    "accepts this host",
                    time.perf_counter() - started,
                )
            )
            return facts
        facts.reachable = True
        facts.clock_offset = offset
        facts.checks.append(passed("database", f"{where} answers", time.perf_counter() - started))
        facts.checks.append(await _migrations(engine))
        tables = await _tables(engine)
        async with create_sessionmaker(engine)() as session:
            if "replica" in tables:
                facts.live_replicas = await _live_replicas(session)
            facts.checks.append(_database_fit(settings, facts.live_replicas))
            if "upstream" in tables:
                rows = (await session.execute(select(UpstreamRow).order_by(UpstreamRow.id))).scalars().all()
                facts.upstreams = [config_from_row(row) for row in rows if row.kind != "demo"]
            facts.checks.append(await _bootstrap_key(session, settings, has_keys="api_key" in tables))
    finally:
        await writer.dispose()
    return facts


def describe_database(settings: Settings) -> str:
    """The database for a person: its file, or host and name; never its password."""
    url = make_url(settings.database_url)
    if settings.is_sqlite:
        return f"SQLite {url.database}"
    return f"PostgreSQL {url.host}:{url.port or 5432}/{url.database}"


def _sqlite_file(settings: Settings) -> Path:
    return Path(make_url(settings.database_url).database or "")


def _reason(exc: BaseException, settings: Settings) -> str:
    """An exception's first line, without the database password."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    lines = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    password = make_url(settings.database_url).password or settings.db_password.get_secret_value()
    return reason.replace(password, "***") if password else reason


async def _ping(engine: AsyncEngine) -> float | None:
    """One round trip; on PostgreSQL, the server's clock minus ours (halfway through the round trip)."""
    async with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            await conn.execute(text("SELECT 1"))
            return None
        before = time.time()
        now = (await conn.execute(select(func.now()))).scalar_one()
        after = time.time()
        return float(now.astimezone(UTC).timestamp() - (before + after) / 2)


async def _tables(engine: AsyncEngine) -> set[str]:
    from sqlalchemy import inspect

    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _migrations(engine: AsyncEngine) -> Check:
    current, heads = await current_revisions(engine), head_revisions()
    if current == heads:
        return passed("database.migrations", f"at the migration head ({', '.join(heads)})")
    at = ", ".join(current) or "no revision (never migrated)"
    return failed(
        "database.migrations",
        f"at {at}, the code expects {', '.join(heads)}",
        "run `gatehouse db upgrade` before switching traffic (or start with RUN_MIGRATIONS=true)",
    )


async def _live_replicas(session: AsyncSession) -> int:
    rows = (await session.execute(select(ReplicaBeat))).scalars().all()
    now = datetime.now(UTC)
    if session.get_bind().dialect.name == "postgresql":
        now = (await session.execute(select(func.now()))).scalar_one().astimezone(UTC)
    return sum(1 for row in rows if is_live(row, now))


def _database_fit(settings: Settings, live: int | None) -> Check:
    replicas = "replicas unknown" if live is None else f"{live} live replica(s)"
    if not settings.is_sqlite:
        return passed("database.replicas", f"PostgreSQL, {replicas}")
    if live is not None and live > 1 and settings.is_prod:
        return failed(
            "database.replicas",
            f"SQLite serves {live} live replicas: one file cannot be shared safely between machines",
            "move to PostgreSQL (DATABASE_URL=postgresql://...) before running several replicas, or run one",
        )
    return passed("database.replicas", f"SQLite, {replicas} (one machine; its file system is not checked)")


async def _bootstrap_key(session: AsyncSession, settings: Settings, *, has_keys: bool) -> Check:
    """Whether the bootstrap admin's first key is still the one in use: the env's, or the one printed at start."""
    name = "bootstrap_key"
    if not has_keys:
        return skipped(name, "the database has no keys yet")
    given = settings.bootstrap_admin_api_key.get_secret_value()
    if given:
        key = await keys.get_by_raw(session, raw_key=given)
        if key is not None and key.revoked_at is None:
            summary = "BOOTSTRAP_ADMIN_API_KEY is set and still works: anyone who reads the environment is superadmin"
            fix = f"run `{ROTATE_BOOTSTRAP}`, store the new key, then remove BOOTSTRAP_ADMIN_API_KEY"
            return failed(name, summary, fix) if settings.is_prod else warned(name, summary, fix)
        if settings.is_prod:
            return warned(
                name,
                "BOOTSTRAP_ADMIN_API_KEY is still set in the environment (the key it holds is revoked)",
                "remove BOOTSTRAP_ADMIN_API_KEY (and BOOTSTRAP_ADMIN_API_KEY_FILE) from the environment",
            )
    user = await users.get_by_email(session, email=users.normalise_email(settings.bootstrap_admin_email))
    if user is None:
        return skipped(name, f"no bootstrap admin {settings.bootstrap_admin_email} (BOOTSTRAP_ADMIN_EMAIL)")
    named = [key for key in await keys.list_for_user(session, user_id=user.id) if key.name == BOOTSTRAP_KEY_NAME]
    active = [key for key in named if key.revoked_at is None]
    if active and len(named) == len(active):
        summary = "the bootstrap admin's first key was never rotated (it was printed or set at bootstrap)"
        fix = f"run `{ROTATE_BOOTSTRAP}` and hand out keys per service or team"
        return warned(name, summary, fix) if settings.is_prod else skipped(name, summary)
    return passed(name, "the bootstrap key was rotated" if named else "the bootstrap admin has no bootstrap key")
