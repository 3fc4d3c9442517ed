"""The support bundle: one ZIP an operator can hand to whoever helps with an escalation.

Each part is collected on its own, so a part that fails (the database down, no server URL, no LOG_FILE) is named in
the manifest with the reason and the rest still arrives: a bundle is most needed when things are broken. Nothing
in it holds a secret or a message: settings are listed with their secrets redacted, every text is scrubbed of the
configured secrets and of anything shaped like a key or token, and log lines are masked as exports mask personal
data.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.engine import make_url

from gatehouse import __version__
from gatehouse.configuration.effective import effective
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import head_revisions
from gatehouse.diagnostics.logfiles import log_parts
from gatehouse.diagnostics.logfilter import LogFilter, Selection, log_lines
from gatehouse.diagnostics.scrub import REDACTED, Scrubber, redact_url, settings_secrets, url_passwords
from gatehouse.exports.pii import EMAIL_PATTERN, mask_email
from gatehouse.jobs.models import ReplicaBeat
from gatehouse.jobs.replicas import database_now, is_live
from gatehouse.monitoring.health import check_database
from gatehouse.monitoring.storage import collect as collect_storage
from gatehouse.settings import Settings
from gatehouse.upstreams.config import load_config
from gatehouse.upstreams.models import UpstreamRow

# Whose versions matter when something misbehaves (the manifest lists them).
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "redis",
    "pydantic",
    "pydantic-settings",
    "structlog",
    "prometheus-client",
    "orjson",
    "typer",
    "cryptography",
    "argon2-cffi",
    "jinja2",
)
DATABASE_TIMEOUT = 10.0  # seconds for each database part
PART_TIMEOUT = 60.0  # seconds for any part (doctor's own checks are bounded well below this)
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
LOG_MEMBER = "logs/gatehouse.log"
DESCRIPTIONS = {
    "config.json": "the effective settings with their sources (secrets redacted, as `gatehouse config show`) and "
    "the configured upstreams (keys left out)",
    "doctor.json": "`gatehouse doctor`: the production checklist, each check PASS/WARN/FAIL/SKIP with its fix",
    "health.json": "GET /readyz and GET /admin/health of the server, or (without --url) the database and "
    "migrations checked from here",
    "database.json": "the database kind, its migration revision against the code's head, and the replicas table",
    "db-stats.json": "`gatehouse db stats`: database, table, backup and log sizes, free disk",
    "metrics.txt": "a snapshot of GET /metrics (Prometheus text format)",
    LOG_MEMBER: "LOG_FILE's lines since the bundle's start time, in time order, scrubbed and masked",
}
Collector = Callable[[], Awaitable[Any]]


@dataclass
class BundleRequest:
    """What to bundle: since when the logs go back, the running server to ask (optional), the extra parts the
    caller can compute (doctor, db stats: name -> collector of a JSON value)."""

    since: datetime
    url: str | None = None
    key: str | None = None
    max_log_bytes: int = 100 * 1024 * 1024
    extras: dict[str, Collector] = field(default_factory=dict)


@dataclass
class BundleResult:
    """Where the bundle went, and what it holds or lacks (name -> reason)."""

    path: Path
    members: dict[str, int]
    missing: dict[str, str]


class Unavailable(Exception):
    """A part cannot be collected here, for a reason worth telling (not a failure of the bundle)."""


async def write_bundle(settings: Settings, request: BundleRequest, output: Path) -> BundleResult:
    """Collect every part and write the ZIP to `output` (atomically: a temporary file renamed at the end)."""
    stored = await _stored_secrets(settings)
    scrubber = Scrubber(settings_secrets(settings) + stored + ([request.key] if request.key else []))
    parts: dict[str, Collector] = {
        "config.json": lambda: _config(settings),
        **request.extras,
        "health.json": lambda: _health(settings, request),
        "database.json": lambda: _database(settings),
        "db-stats.json": lambda: _storage(settings),
    }
    collected: dict[str, bytes] = {}
    missing: dict[str, str] = {}
    for name, collect in parts.items():
        try:
            async with asyncio.timeout(PART_TIMEOUT):
                value = await collect()
        except (Exception, asyncio.CancelledError) as exc:  # one part's trouble is the bundle's finding, not its end
            if isinstance(exc, asyncio.CancelledError) and _cancelling():
                raise  # this command is being stopped (a part's own cancelled work is only its trouble)
            missing[name] = scrubber.text(_reason(exc))
            continue
        collected[name] = orjson.dumps(scrubber.value(value), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    try:
        collected["metrics.txt"] = _mask_emails(scrubber.text(await _metrics(settings, request))).encode()
    except Exception as exc:
        missing["metrics.txt"] = scrubber.text(_reason(exc))
    return await asyncio.to_thread(_write_zip, output, collected, missing, settings, request, scrubber)


def _write_zip(
    output: Path,
    collected: dict[str, bytes],
    missing: dict[str, str],
    settings: Settings,
    request: BundleRequest,
    scrubber: Scrubber,
) -> BundleResult:
    """The parts, the logs and the manifest, into a file of the owner's only (mode 0600), renamed into place."""
    members = {name: len(data) for name, data in collected.items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=output.parent, prefix=".support-bundle.", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(staging, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in collected.items():
                archive.writestr(name, data)
            try:
                members[LOG_MEMBER] = _write_logs(archive, settings, request, scrubber)
            except Exception as exc:
                missing[LOG_MEMBER] = scrubber.text(_reason(exc))
            manifest = _manifest(settings, request, members, missing)
            archive.writestr("manifest.json", orjson.dumps(scrubber.value(manifest), option=orjson.OPT_INDENT_2))
        os.replace(staging, output)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return BundleResult(path=output, members=members, missing=missing)


async def _stored_secrets(settings: Settings) -> list[str]:
    """The keys and header values of upstreams created through the API (the database holds them), to be scrubbed
    too; none when the database cannot be read (then no part read from it can hold them either)."""
    if _sqlite_missing(settings) is not None:
        return []
    engine = create_engine(settings)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT), create_sessionmaker(engine)() as session:
            rows = (await session.execute(select(UpstreamRow))).scalars().all()
    except Exception:
        return []
    finally:
        await engine.dispose()
    found: list[str] = []
    for row in rows:
        found.append(row.api_key)
        found.extend(str(value) for value in (row.headers or {}).values())
        found.extend(url_passwords(row.base_url))
        if row.api_key_env:
            found.append(os.environ.get(row.api_key_env, ""))
    return found


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Unavailable):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {PART_TIMEOUT:.0f} s"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled before it finished"
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _mask_emails(text: str) -> str:
    """Emails masked (metrics hold numbers that free-text masking would take for phone numbers)."""
    return EMAIL_PATTERN.sub(lambda m: mask_email(m.group(0)), text)


# --- the parts ---------------------------------------------------------------------------------------------


async def _config(settings: Settings) -> dict[str, Any]:
    """Each setting with its value (secrets redacted) and its source, as `gatehouse config show --json` lists them,
    and the upstreams."""
    values = [asdict(item) for item in effective(settings)]
    upstreams: list[dict[str, Any]] | str
    try:
        upstreams = [
            {
                "name": u.name,
                "kind": u.kind.value,
                "base_url": redact_url(u.base_url),
                "api_key": REDACTED if u.resolved_api_key() else "",
                "api_key_env": u.api_key_env,
                "headers": sorted(u.headers),  # their names: values may be credentials
                "models": u.models,
                "discover": u.discover,
            }
            for u in load_config(settings).upstreams
        ]
    except Exception as exc:
        upstreams = f"GATEHOUSE_CONFIG cannot be read: {_reason(exc)}"
    return {"settings": values, "upstreams": upstreams, "problems": settings.problems()}


async def _storage(settings: Settings) -> dict[str, Any]:
    """`gatehouse db stats`: the database's and its largest tables' sizes, BACKUP_DIR, the log files, free disk."""
    missing = _sqlite_missing(settings)
    if missing is not None:
        raise Unavailable(f"the SQLite database {missing} does not exist here (run this where Gatehouse serves)")
    engine = create_engine(settings)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            return (await collect_storage(engine, settings)).to_dict()
    finally:
        await engine.dispose()


def _sqlite_missing(settings: Settings) -> str | None:
    """The SQLite file DATABASE_URL names when it does not exist (connecting would create an empty one)."""
    if not settings.is_sqlite:
        return None
    database = make_url(settings.database_url).database or ""
    if database in ("", ":memory:") or Path(database).exists():
        return None
    return database


async def _health(settings: Settings, request: BundleRequest) -> dict[str, Any]:
    """The server's own answers when a URL is given; else what can be checked from here without serving."""
    if request.url:
        headers = {"authorization": f"Bearer {request.key}"} if request.key else {}
        async with httpx.AsyncClient(base_url=request.url, timeout=HTTP_TIMEOUT, headers=headers) as client:
            return {
                "source": "server",
                "readyz": await _get_json(client, "/readyz"),
                "admin_health": await _get_json(client, "/admin/health")
                if request.key
                else "not asked: give --key (a monitor's or admin's API key) to include GET /admin/health",
            }
    missing = _sqlite_missing(settings)
    if missing is not None:
        raise Unavailable(f"the SQLite database {missing} does not exist here (run this where Gatehouse serves)")
    engine = create_engine(settings)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            database, migrations = await check_database(engine, head_revisions())
    finally:
        await engine.dispose()
    return {
        "source": "this machine (no --url: the server itself was not asked)",
        "database": database.model_dump(mode="json"),
        "migrations": migrations.model_dump(mode="json"),
    }


async def _get_json(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    answer = await client.get(path)
    try:
        body: Any = answer.json()
    except ValueError:
        body = answer.text[:2000]
    result = {"status_code": answer.status_code, "body": body}
    if answer.status_code in (401, 403):
        result["note"] = "the key was refused: give an API key of a monitor, admin or superadmin"
    return result


async def _database(settings: Settings) -> dict[str, Any]:
    """The revision the database is at, the code's head, and every replica's heartbeat row."""
    missing = _sqlite_missing(settings)
    if missing is not None:
        raise Unavailable(f"the SQLite database {missing} does not exist here (run this where Gatehouse serves)")
    engine = create_engine(settings)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            _, migrations = await check_database(engine, head_revisions())
            async with create_sessionmaker(engine)() as session:
                now = await database_now(session)
                rows = (await session.execute(select(ReplicaBeat).order_by(ReplicaBeat.started_at))).scalars().all()
    finally:
        await engine.dispose()
    return {
        "kind": engine.dialect.name,
        "url": redact_url(settings.database_url),
        "revision": migrations.model_dump(mode="json"),
        "replicas": [
            {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "version": row.version,
                "started_at": row.started_at.isoformat(),
                "seen_at": row.seen_at.isoformat(),
                "live": is_live(row, now),
            }
            for row in rows
        ],
    }


async def _metrics(settings: Settings, request: BundleRequest) -> str:
    if not request.url:
        raise Unavailable("no --url given: the metrics live in the running server (gatehouse support-bundle --url)")
    token = settings.metrics_token.get_secret_value() or request.key
    if not token:
        raise Unavailable("GET /metrics needs METRICS_TOKEN or --key (a monitor's API key)")
    async with httpx.AsyncClient(base_url=request.url, timeout=HTTP_TIMEOUT) as client:
        answer = await client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    if answer.status_code != 200:
        raise Unavailable(f"GET /metrics answered {answer.status_code}: {answer.text[:200]}")
    return answer.text


def _write_logs(archive: zipfile.ZipFile, settings: Settings, request: BundleRequest, scrubber: Scrubber) -> int:
    """LOG_FILE's lines since `request.since`, scrubbed, streamed into the archive; the newest `max_log_bytes`
    when there are more (a first pass counts them). The number of bytes written."""
    path = settings.log_file
    if path is None:
        raise Unavailable(
            "LOG_FILE is not set: attach the logs where they are collected instead, scrubbed of secrets "
            "(`journalctl -u gatehouse --since -24h`, `kubectl logs deploy/gatehouse --since=24h`)"
        )
    parts = log_parts(path)
    if not parts:
        raise Unavailable(f"LOG_FILE={path} does not exist here, nor any rotated file of it")
    criteria = LogFilter(since=request.since)
    total = sum(len(s.text) + 1 for s in _selected(parts, criteria))
    skip = max(0, total - request.max_log_bytes)
    written = 0
    entry = zipfile.ZipInfo(LOG_MEMBER, date_time=time.localtime()[:6])  # open() by name would date it 1980
    entry.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(entry, "w") as member:
        if skip:
            since = request.since.isoformat()
            member.write(f"# the oldest {skip} bytes of lines since {since} were left out (--max-log-mb)\n".encode())
        for selected in _selected(parts, criteria):
            if skip > 0:
                skip -= len(selected.text) + 1
                continue
            line = (scrubber.log_line(selected.text) + "\n").encode()
            member.write(line)
            written += len(line)
    return written


def _selected(parts: list[Any], criteria: LogFilter) -> Iterator[Any]:
    return Selection(criteria).select(log_lines(parts, criteria))


def _manifest(
    settings: Settings, request: BundleRequest, members: dict[str, int], missing: dict[str, str]
) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "bundle": "Gatehouse support bundle",
        "created_at": datetime.now(UTC).isoformat(),
        "logs_since": request.since.isoformat(),
        "gatehouse_version": __version__,
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "environment": settings.environment.value,
        "database": make_url(settings.database_url).get_backend_name(),
        "server_url": redact_url(request.url) if request.url else None,
        "packages": packages,
        "members": [
            {"name": name, "bytes": size, "what": DESCRIPTIONS.get(name, "")} for name, size in members.items()
        ],
        "missing": [{"name": name, "why": why} for name, why in missing.items()],
        "redaction": (
            "Secrets are never included: settings holding one show only whether it is set, URL passwords are "
            "replaced, every text is scrubbed of the configured secrets' values and of anything shaped like an API "
            "key or a bearer token; log lines have emails, phone numbers and IP addresses masked as exports mask "
            "them. Logs never hold message contents."
        ),
    }
