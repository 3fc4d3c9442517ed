"""The log level for a period: PUT /admin/log-level and `gatehouse log-level`, on every replica, reverting by itself.

An override (a level for everything or for some loggers, and/or a slow-SQL threshold, until a time) is kept where
every replica can read it, then announced on the bus (Signal.LOG_LEVEL): with REDIS_URL in a Redis key that
expires when the override does, so a replica that starts during the period applies it too; without Redis in this
process's memory (one process: nothing else to tell). Each replica reverts at the end by itself, with a timer;
a replica that missed the announcement (Redis was away) reads the key again when its bus reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus, Signal
from gatehouse.core.logging import current_levels, get_logger, set_levels
from gatehouse.core.redis_state import outage_errors
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import utcnow
from gatehouse.db.session import after_commit
from gatehouse.db.sqllog import SqlLog
from gatehouse.errors import Unavailable, ValidationFailed
from gatehouse.monitoring.events import LogLevelChangedEvent, LogLevelResetEvent
from gatehouse.settings import Settings

log = get_logger("gatehouse.loglevel")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_SECONDS = 1  # short periods are for tests and quick looks; the usual is an hour
MAX_SECONDS = 24 * 3600  # a forgotten DEBUG must not fill the disk for more than a day
MAX_LOGGERS = 20
KEY = "log_level"  # under REDIS_PREFIX
SQL_LOGGER = "gatehouse.sql"  # db/sqllog.py


@dataclass(frozen=True)
class Override:
    """A temporary level: `level` for everything, or only for `loggers` (and their children) when some are named;
    `slow_sql_ms` replaces SLOW_SQL_MS; all until `until`."""

    level: str | None
    until: datetime
    loggers: tuple[str, ...] = ()
    slow_sql_ms: float | None = None
    by: str | None = None

    def remaining(self, now: datetime) -> float:
        """Seconds left (0 or less: over)."""
        return (self.until - now).total_seconds()

    def to_wire(self) -> dict[str, Any]:
        """As stored in Redis and sent on the bus."""
        return {
            "level": self.level,
            "until": self.until.isoformat(),
            "loggers": list(self.loggers),
            "slow_sql_ms": self.slow_sql_ms,
            "by": self.by,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Override:
        """From what `to_wire` made (ValueError or KeyError when it is not)."""
        level = data.get("level")
        slow = data.get("slow_sql_ms")
        return cls(
            level=str(level) if level else None,
            until=datetime.fromisoformat(str(data["until"])),
            loggers=tuple(str(name) for name in data.get("loggers") or ()),
            slow_sql_ms=float(slow) if slow is not None else None,
            by=str(data["by"]) if data.get("by") else None,
        )


# --- where the override is kept ------------------------------------------------------------------------


class OverrideStore:
    """In this process's memory: the deployment without Redis has one process."""

    def __init__(self) -> None:
        self._held: Override | None = None

    @property
    def shared(self) -> bool:
        """Whether other processes (replicas, the CLI) read the same override."""
        return False

    async def load(self) -> Override | None:
        """The override in force, if any (one past its end is none)."""
        held = self._held
        return held if held is not None and held.remaining(utcnow()) > 0 else None

    async def save(self, override: Override) -> None:
        """Keep `override` until its end."""
        self._held = override

    async def clear(self) -> None:
        """Forget the override."""
        self._held = None

    async def close(self) -> None:
        """Release what it holds."""


class RedisOverrideStore(OverrideStore):
    """One Redis key, expiring with the override: every replica reads the same, and a late one still finds it."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._key = prefix + KEY

    @property
    def shared(self) -> bool:
        return True

    async def load(self) -> Override | None:
        raw = await self._redis.get(self._key)
        if raw is None:
            return None
        try:
            found = Override.from_wire(orjson.loads(raw))
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            log.warning("log_level_override_unreadable", key=self._key)
            return None
        return found if found.remaining(utcnow()) > 0 else None

    async def save(self, override: Override) -> None:
        milliseconds = max(int(override.remaining(utcnow()) * 1000), 1)
        await self._redis.set(self._key, orjson.dumps(override.to_wire()), px=milliseconds)

    async def clear(self) -> None:
        await self._redis.delete(self._key)

    async def close(self) -> None:
        await self._redis.aclose()


def override_store(settings: Settings) -> OverrideStore:
    """Redis when REDIS_URL is set, else this process's memory."""
    return RedisOverrideStore(settings.redis_url, settings.redis_prefix) if settings.redis_url else OverrideStore()


# --- what a replica applies -----------------------------------------------------------------------------


@dataclass
class LogLevelState:
    """What this replica logs now: GET /admin/log-level."""

    level: str
    base_level: str
    loggers: dict[str, str]
    slow_sql_ms: float
    log_sql: bool
    override: Override | None
    shared: bool
    replica: str = ""
    notes: list[str] = field(default_factory=list)


class LogLevelControl:
    """Applies the override in force on this replica, and reverts to the settings when it ends."""

    def __init__(self, settings: Settings, store: OverrideStore, sql_log: SqlLog, *, replica: str = "") -> None:
        self.settings = settings
        self.store = store
        self.sql_log = sql_log
        self.replica = replica
        self.override: Override | None = None
        self._timer: asyncio.Task[None] | None = None

    def _base(self) -> tuple[str, dict[str, str]]:
        """The settings' levels: LOG_LEVEL, and gatehouse.sql at DEBUG with LOG_SQL (so its lines show)."""
        return self.settings.log_level, ({SQL_LOGGER: "DEBUG"} if self.settings.log_sql else {})

    async def start(self) -> None:
        """Apply the override a replica started during finds (with Redis), else the settings."""
        found = None
        try:
            found = await self.store.load()
        except Exception as exc:  # Redis away: start with the settings; the bus's reconnection reads it again
            log.warning("log_level_override_unreadable", error=f"{type(exc).__name__}: {exc}"[:200])
        self.apply(found)

    async def close(self) -> None:
        """Stop the timer and go back to the settings' levels."""
        await stop_task(self._timer)
        self._timer = None
        self.apply(None)
        self.sql_log.close()
        await self.store.close()

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: an override announced (or ended) anywhere; after a Redis outage, read the key again."""
        if kind == Signal.LOG_LEVEL:
            wire = data.get("override")
            try:
                self.apply(Override.from_wire(wire) if isinstance(wire, dict) else None)
            except (ValueError, KeyError, TypeError):
                log.warning("log_level_signal_unreadable")
        elif kind == Signal.RECONNECTED and self.store.shared:
            with contextlib.suppress(Exception):
                self.apply(await self.store.load())

    def apply_settings(self, settings: Settings) -> None:
        """A configuration reload: LOG_LEVEL, LOG_SQL and SLOW_SQL_MS as they are now (an override in force stays
        on top of them until it ends)."""
        self.settings = settings
        self.apply(self.override)

    def apply(self, override: Override | None) -> None:
        """Set the levels and the slow-SQL threshold: the override's until its end, else the settings'."""
        if override is not None and override.remaining(utcnow()) <= 0:
            override = None
        previous, self.override = self.override, override
        level, loggers = self._base()
        slow_ms = self.settings.slow_sql_ms
        log_all = self.settings.log_sql
        if override is not None:
            # Naming gatehouse.sql at DEBUG is LOG_SQL for the period (its hooks are attached only while asked).
            log_all = log_all or (override.level == "DEBUG" and SQL_LOGGER in override.loggers)
            if override.level and override.loggers:
                loggers = {**loggers, **dict.fromkeys(override.loggers, override.level)}
            elif override.level:
                level = override.level
            if override.slow_sql_ms is not None:
                slow_ms = override.slow_sql_ms
        set_levels(level, dict(loggers))
        self.sql_log.configure(slow_ms=slow_ms, log_all=log_all)
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        if override is not None:
            self._timer = asyncio.get_running_loop().create_task(self._revert_at_end(override))
            log.warning(
                "log_level_override",
                level=override.level,
                loggers=list(override.loggers),
                slow_sql_ms=override.slow_sql_ms,
                until=override.until.isoformat(),
                by=override.by,
            )
        elif previous is not None:
            log.warning("log_level_restored", level=level, slow_sql_ms=slow_ms)

    async def _revert_at_end(self, override: Override) -> None:
        await asyncio.sleep(max(override.remaining(utcnow()), 0))
        if self.override == override:
            self.apply(None)

    def state(self) -> LogLevelState:
        """What this replica logs now, and the override it follows."""
        root, named = current_levels()
        base, _ = self._base()
        return LogLevelState(
            level=logging.getLevelName(root),
            base_level=base,
            loggers={name: logging.getLevelName(value) for name, value in named.items()},
            slow_sql_ms=self.sql_log.slow_ms,
            log_sql=self.sql_log.log_all,
            override=self.override,
            shared=self.store.shared,
            replica=self.replica,
        )


# --- the service: change and end, audited -------------------------------------------------------------


def validate(
    *, level: str | None, seconds: int, loggers: list[str] | None, slow_sql_ms: float | None
) -> tuple[str | None, tuple[str, ...]]:
    """The level in capitals and the logger names, or a 422 naming the field and the fix."""
    if level is None and slow_sql_ms is None:
        raise ValidationFailed("Give `level` (DEBUG, INFO...), `slow_sql_ms`, or both.", param="level")
    if level is not None and level.upper() not in LEVELS:
        raise ValidationFailed(f"`level` must be one of {', '.join(LEVELS)}; got {level!r}.", param="level")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ValidationFailed(
            f"The period must be {MIN_SECONDS} second to {MAX_SECONDS // 3600} hours (`minutes` up to "
            f"{MAX_SECONDS // 60}, or `seconds`).",
            param="minutes",
        )
    names = tuple(dict.fromkeys(name.strip() for name in loggers or () if name.strip()))
    if names and level is None:
        raise ValidationFailed("`loggers` needs a `level` to give them.", param="loggers")
    if len(names) > MAX_LOGGERS or any(len(name) > 200 or " " in name for name in names):
        raise ValidationFailed(
            f"`loggers`: at most {MAX_LOGGERS} logger names (e.g. gatehouse.gateway, httpx), without spaces.",
            param="loggers",
        )
    if slow_sql_ms is not None and not 0 <= slow_sql_ms <= 3_600_000:
        raise ValidationFailed("`slow_sql_ms` must be 0 (off) to 3600000 milliseconds.", param="slow_sql_ms")
    return (level.upper() if level else None), names


async def change(
    session: AsyncSession,
    *,
    store: OverrideStore,
    bus: EventBus,
    actor: Actor,
    level: str | None,
    seconds: int,
    loggers: list[str] | None = None,
    slow_sql_ms: float | None = None,
) -> Override:
    """Set an override on every replica until now + `seconds`; audited in the caller's transaction, stored and
    announced once it commits."""
    level, names = validate(level=level, seconds=seconds, loggers=loggers, slow_sql_ms=slow_sql_ms)
    until = utcnow() + timedelta(seconds=seconds)
    override = Override(level=level, until=until, loggers=names, slow_sql_ms=slow_sql_ms, by=actor.label)
    event = LogLevelChangedEvent(
        level=level, loggers=list(names), slow_sql_ms=slow_sql_ms, seconds=seconds, until=until.isoformat()
    )
    # Stored before the commit: without Redis to hold it, the change is refused (and not audited) rather than
    # reaching only the replicas listening now.
    await _stored(store.save(override))
    await record(session, event, actor=actor)

    async def announce() -> None:
        await bus.publish(Signal.LOG_LEVEL, {"override": override.to_wire()})

    after_commit(session, announce)
    return override


async def _stored(call: Awaitable[None]) -> None:
    """Run a store's write; Redis away is a 503 that says so, never a 500."""
    try:
        await call
    except outage_errors() as exc:
        raise Unavailable(
            f"Redis did not answer ({type(exc).__name__}), so the log level could not be set for every replica: "
            "try again once it answers (GET /admin/health shows Redis)."
        ) from exc


async def reset(session: AsyncSession, *, store: OverrideStore, bus: EventBus, actor: Actor) -> Override | None:
    """End the override in force now, everywhere (audited); None when there was none (nothing recorded)."""
    try:
        current = await store.load()
    except outage_errors() as exc:
        raise Unavailable(f"Redis did not answer ({type(exc).__name__}): try again once it answers.") from exc
    if current is None:
        return None
    await _stored(store.clear())
    await record(
        session,
        LogLevelResetEvent(level=current.level, loggers=list(current.loggers), until=current.until.isoformat()),
        actor=actor,
    )

    async def announce() -> None:
        await bus.publish(Signal.LOG_LEVEL, {"override": None})

    after_commit(session, announce)
    return current
