"""The audit events of monitoring: the log level changed for a period, and ended (docs/audit.md)."""

from __future__ import annotations

from gatehouse.audit.events import Event


class LogLevelChangedEvent(Event):
    """The log level (of everything, or of some loggers) and/or the slow-SQL threshold changed on every replica
    until a time, after which it reverts by itself. The actor says who."""

    action = "log_level.changed"
    level: str | None
    loggers: list[str]
    slow_sql_ms: float | None
    seconds: int
    until: str


class LogLevelResetEvent(Event):
    """A log-level override was ended before its time (DELETE /admin/log-level, `gatehouse log-level reset`)."""

    action = "log_level.reset"
    level: str | None
    loggers: list[str]
    until: str | None
