"""Which log lines an operator asked for: by time, level, request id, user, event name (glob) and free text.

Lines are the JSON objects core/logging.py writes (`timestamp` in ISO 8601 UTC, `level`, `event`, and the request's
`request_id`, `user_id`, `stream_id`). A line that is not JSON (LOG_FORMAT=console output captured elsewhere) has
none of those fields: only free text (`--grep`) can select it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gatehouse.diagnostics.logfiles import LogPart, read_lines, written_before

# structlog's level names (its method names: `exception` logs at error, `warn` at warning), lowest first.
LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "exception": 40, "critical": 50}
LEVEL_CHOICES = ("debug", "info", "warning", "error", "critical")
USER_FIELDS = ("user_id", "key_owner_id")  # a request made by a front-end for a person carries both
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """`1h`, `30m`, `2d`, `1w`, `90s` ago, or an ISO date or time (`2026-12-07`, `2026-12-07T10:00`, with an
    offset or in UTC); ValueError saying which forms are understood."""
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration is not None:
        seconds = float(duration.group(1)) * _UNITS[duration.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 1h, 2d, 1w) nor an ISO time (2026-12-07T10:00, UTC unless an "
            "offset is given)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_line(text: str) -> dict[str, Any] | None:
    """A log line's fields, or None when the line is not a JSON object."""
    if not text.startswith("{"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def line_time(entry: dict[str, Any]) -> datetime | None:
    """When a line was written (its `timestamp`), or None when it has none that reads as a time."""
    stamp = entry.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class LogFilter:
    """What to keep; every criterion given must hold (`events`: any of the globs)."""

    since: datetime | None = None
    until: datetime | None = None
    level: str | None = None  # this level and above
    request_id: str | None = None
    user_ids: frozenset[str] = frozenset()  # a user's id, as text (JSON gives numbers, context may give text)
    events: tuple[str, ...] = ()
    grep: str | None = None  # free text, case-insensitive

    @property
    def by_fields(self) -> bool:
        """Whether a criterion needs the JSON fields (a line that is not JSON fails it)."""
        return bool(self.since or self.until or self.level or self.request_id or self.user_ids or self.events)

    def matches_text(self, text: str) -> bool:
        """The free-text criterion, on the raw line."""
        return self.grep is None or self.grep.casefold() in text.casefold()

    def matches(self, entry: dict[str, Any]) -> bool:
        """The field criteria, on a parsed line."""
        if self.level is not None and LEVELS.get(str(entry.get("level", "")).lower(), 0) < LEVELS[self.level]:
            return False
        if self.request_id is not None and entry.get("request_id") != self.request_id:
            return False
        if self.user_ids and not any(str(entry.get(name)) in self.user_ids for name in USER_FIELDS):
            return False
        if self.events and not any(fnmatch.fnmatchcase(str(entry.get("event", "")), glob) for glob in self.events):
            return False
        if self.since is not None or self.until is not None:
            moment = line_time(entry)
            if moment is None:
                return False
            if (self.since is not None and moment < self.since) or (self.until is not None and moment > self.until):
                return False
        return True


@dataclass
class Selected:
    """A line that passed, with its fields (None: not JSON, shown because --grep matched it)."""

    text: str
    entry: dict[str, Any] | None


@dataclass
class Selection:
    """Filters lines, counting the ones that were not JSON (the CLI says what became of them)."""

    criteria: LogFilter
    plain_skipped: int = 0
    plain_shown: int = 0
    _quick: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # A request id is searched for as text first: most lines are then never parsed (a week is millions).
        self._quick = self.criteria.request_id

    def select(self, lines: Iterable[str]) -> Iterator[Selected]:
        """The lines that pass, in the order given."""
        criteria = self.criteria
        for text in lines:
            if not text:
                continue
            if self._quick is not None and self._quick not in text:
                continue
            if not criteria.matches_text(text):
                continue
            entry = parse_line(text)
            if entry is None:
                if criteria.grep is None:
                    self.plain_skipped += 1
                    continue
                self.plain_shown += 1
                yield Selected(text, None)
            elif criteria.matches(entry):
                yield Selected(text, entry)


def log_lines(parts: Iterable[LogPart], criteria: LogFilter) -> Iterator[str]:
    """The lines of the log's files in time order (oldest file first), skipping the files last written before
    --since. (A rotated file's name gives the week it was rotated in, not its first line's: a file may hold weeks
    during which nothing was written, so --until cannot skip files by name.)"""
    for part in parts:
        if criteria.since is not None and written_before(part, criteria.since):
            continue
        yield from read_lines(part.path)
