"""What a report asks for: its dimensions, its time range and its filters, read from what people type (the API's
query parameters and the CLI's options alike), refused with the parameter at fault."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from gatehouse.reports.errors import InvalidRange, UnknownDimension

Dimension = Literal["user", "group", "key", "model", "upstream", "surface"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
MAX_DAYS = 366  # a leap year, from its first day to its last
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FORMAT_HINT = "a date (YYYY-MM-DD) or an ISO datetime, e.g. 2026-03-01 or 2026-03-01T09:00:00Z"


@dataclass(frozen=True)
class Filters:
    """Only the requests of this user, group, key, model, upstream and surface (None: any)."""

    user_id: int | None = None
    group_id: int | None = None
    key_id: int | None = None
    model: str | None = None
    upstream: str | None = None
    surface: str | None = None


@dataclass(frozen=True)
class ReportQuery:
    """A report's question: group the requests logged in [start, end) by `group_by`; `limit` rows, the rest
    summed into one."""

    group_by: tuple[Dimension, ...]
    start: datetime
    end: datetime
    filters: Filters = field(default_factory=Filters)
    limit: int = DEFAULT_LIMIT

    @property
    def rows_may_overlap(self) -> bool:
        """Whether a request may count in several rows: by group, a user's requests count in each of their groups."""
        return "group" in self.group_by and self.filters.group_id is None


def parse_group_by(values: Sequence[str]) -> tuple[Dimension, ...]:
    """Dimensions from `user,model` or from several values, in the order given (each once; empty ones skipped)."""
    names = [name for value in values for part in value.split(",") if (name := part.strip().lower())]
    if not names:
        raise UnknownDimension(_no_dimension(), param="group_by")
    found: list[Dimension] = []
    for name in names:
        if name not in DIMENSIONS:
            raise UnknownDimension(f"Unknown dimension {name!r} in group_by: {_no_dimension()}", param="group_by")
        if name not in found:
            found.append(name)
    return tuple(found)


def _no_dimension() -> str:
    return f"group by one or more of {', '.join(DIMENSIONS)}, separated by commas (e.g. group_by=group,model)"


def parse_range(start: str | None, end: str | None, *, timezone: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC. A date is a day in QUOTA_TIMEZONE (`to` included); a datetime without an offset is in
    QUOTA_TIMEZONE too. Neither given: this month. Only `from`: until now. Only `to`: from the first of its month."""
    zone = ZoneInfo(timezone)
    if start is None and end is None:
        first = now.astimezone(zone).date().replace(day=1)
        return _midnight(first, zone), _midnight(_next_month(first), zone)
    until = _bound(end, "to", zone, is_end=True) if end is not None else now
    since = _bound(start, "from", zone, is_end=False) if start is not None else None
    if since is None:  # the month of the range's last moment (`to=2026-03-31`: all of March)
        last = (until - timedelta(microseconds=1)).astimezone(zone).date()
        since = _midnight(last.replace(day=1), zone)
    if until <= since:
        told = end if end is not None else f"now, {until.isoformat(timespec='seconds')}"
        raise InvalidRange(f"`to` ({told}) must be after `from` ({start}): swap them or widen the range", param="to")
    days = (until.astimezone(zone).replace(tzinfo=None) - since.astimezone(zone).replace(tzinfo=None)) / timedelta(1)
    if days > MAX_DAYS:
        raise InvalidRange(
            f"The range from {since.astimezone(zone).date()} to {until.astimezone(zone).date()} spans {days:.0f} days;"
            f" a report covers at most {MAX_DAYS}: narrow `from` and `to`, or make one report per year",
            param="to",
        )
    return since, until


def _bound(text: str, param: str, zone: ZoneInfo, *, is_end: bool) -> datetime:
    """One end of the range: a date (its midnight; the next day's for `to`) or a datetime, in UTC."""
    value = text.strip()
    try:
        if _DATE.fullmatch(value):
            day = date.fromisoformat(value)
            return _midnight(day + timedelta(days=1) if is_end else day, zone)
        moment = datetime.fromisoformat(value)
    except ValueError:
        hint = " (in a URL, write + as %2B)" if " " in value else ""
        raise InvalidRange(f"`{param}` must be {_FORMAT_HINT}; got {text!r}{hint}", param=param) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)
