"""Routes: /admin/log-level, the log level (and slow-SQL threshold) for a period on every replica."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep, BusDep, SessionDep
from gatehouse.errors import ValidationFailed
from gatehouse.monitoring import loglevel
from gatehouse.monitoring.loglevel import LogLevelControl, Override

router = APIRouter(prefix="/admin/log-level", tags=["ops"])
ControlDep = Annotated[LogLevelControl, provided(LogLevelControl)]


class LogLevelChange(BaseModel):
    level: str | None = Field(
        default=None, description="DEBUG, INFO, WARNING, ERROR or CRITICAL; may be left out when only `slow_sql_ms`."
    )
    minutes: float | None = Field(default=None, description="How long, 1 minute to 1440; or give `seconds`.")
    seconds: int | None = Field(default=None, description="How long in seconds (1 to 86400), instead of `minutes`.")
    loggers: list[str] | None = Field(
        default=None, description="Only these loggers and their children (e.g. gatehouse.gateway, httpx); else all."
    )
    slow_sql_ms: float | None = Field(
        default=None, description="Log statements slower than this (ms) as `slow_sql` for the period; 0: off."
    )


class OverrideRead(BaseModel):
    level: str | None
    loggers: list[str]
    slow_sql_ms: float | None
    until: datetime
    by: str | None

    @classmethod
    def of(cls, override: Override) -> OverrideRead:
        return cls(
            level=override.level,
            loggers=list(override.loggers),
            slow_sql_ms=override.slow_sql_ms,
            until=override.until,
            by=override.by,
        )


class LogLevelRead(BaseModel):
    level: str = Field(description="The level of every logger without its own, on the replica that answered.")
    base_level: str = Field(description="LOG_LEVEL: what it reverts to.")
    loggers: dict[str, str] = Field(description="Loggers with a level of their own (from an override, or LOG_SQL).")
    slow_sql_ms: float = Field(description="The slow-SQL threshold now (0: off).")
    log_sql: bool = Field(
        description="Every statement logged at DEBUG: LOG_SQL, or an override giving `gatehouse.sql` DEBUG."
    )
    override: OverrideRead | None = Field(description="The override in force and its end; null: the settings'.")
    shared: bool = Field(description="Whether the override reaches every replica (REDIS_URL) or only this process.")
    replica: str


def _read(control: LogLevelControl) -> LogLevelRead:
    state = control.state()
    return LogLevelRead(
        level=state.level,
        base_level=state.base_level,
        loggers=state.loggers,
        slow_sql_ms=state.slow_sql_ms,
        log_sql=state.log_sql,
        override=OverrideRead.of(state.override) if state.override else None,
        shared=state.shared,
        replica=state.replica,
    )


@router.get("", response_model=LogLevelRead, dependencies=[require(Role.MONITOR)])
async def get_log_level(control: ControlDep) -> LogLevelRead:
    """The log level now, the override in force (if any) and when it ends."""
    return _read(control)


class LogLevelEnded(BaseModel):
    ended: OverrideRead | None = Field(description="The override that was ended; null: there was none.")


@router.put("", response_model=OverrideRead, dependencies=[require(Role.ADMIN)])
async def put_log_level(
    change: LogLevelChange, control: ControlDep, session: SessionDep, bus: BusDep, actor: ActorDep
) -> OverrideRead:
    """Change the log level (and/or the slow-SQL threshold) on every replica for a period; it reverts by itself.
    Audited as `log_level.changed`; in force on this replica when the answer arrives."""
    if (change.minutes is None) == (change.seconds is None):
        raise ValidationFailed(
            "Give the period as `minutes` (e.g. 60) or as `seconds`, one of the two.", param="minutes"
        )
    seconds = change.seconds if change.seconds is not None else round((change.minutes or 0) * 60)
    override = await loglevel.change(
        session,
        store=control.store,
        bus=bus,
        actor=actor,
        level=change.level,
        seconds=seconds,
        loggers=change.loggers,
        slow_sql_ms=change.slow_sql_ms,
    )
    return OverrideRead.of(override)


@router.delete("", response_model=LogLevelEnded, dependencies=[require(Role.ADMIN)])
async def delete_log_level(control: ControlDep, session: SessionDep, bus: BusDep, actor: ActorDep) -> LogLevelEnded:
    """End the override now, on every replica (audited as `log_level.reset`); nothing to end is no error."""
    ended = await loglevel.reset(session, store=control.store, bus=bus, actor=actor)
    return LogLevelEnded(ended=OverrideRead.of(ended) if ended else None)
