"""Job schedules, in UTC: `daily@03:00` (or just `03:00`), `hourly` / `hourly@15`, `weekly@sun 03:00`,
`every 6h` / `every 30m` / `every 10s`.

Each is a fixed period with an offset from a Monday midnight, so the slot a moment belongs to is one division:
every replica computes the same slot for the same moment, which is what lets the job runner run a slot once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# A Monday at 00:00 UTC: weekly offsets count from here.
ORIGIN = datetime(1970, 1, 5, tzinfo=UTC)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EXAMPLES = "daily@03:00, 03:00, hourly, hourly@15, weekly@sun 03:00, every 6h, every 30m, every 10s"

_TIME = r"(?P<hour>\d{1,2}):(?P<minute>\d{2})"
_DAILY = re.compile(rf"(?:daily@)?{_TIME}")
_HOURLY = re.compile(r"hourly(?:@:?(?P<minute>\d{1,2}))?")
_WEEKLY = re.compile(rf"weekly@(?P<day>[a-z]{{3}})[ @]{_TIME}")
_EVERY = re.compile(r"every (?P<count>\d+) ?(?P<unit>s|m|min|h|d)")


@dataclass(frozen=True)
class Schedule:
    """A period and an offset from ORIGIN, and the text it was given as."""

    text: str
    period: timedelta
    offset: timedelta

    def latest(self, at: datetime) -> datetime:
        """The most recent slot at or before `at`."""
        elapsed = at - ORIGIN - self.offset
        return ORIGIN + self.offset + self.period * (elapsed // self.period)

    def next_after(self, at: datetime) -> datetime:
        """The first slot after `at`."""
        return self.latest(at) + self.period


def _clock(hour: str, minute: str) -> timedelta:
    h, m = int(hour), int(minute)
    if h > 23 or m > 59:
        raise ValueError(f"{hour}:{minute} is not a time of day (00:00 to 23:59)")
    return timedelta(hours=h, minutes=m)


def parse_schedule(text: str) -> Schedule:
    """A schedule from its text; ValueError says which forms are understood."""
    spec = " ".join(text.strip().lower().split())
    if match := _DAILY.fullmatch(spec):
        return Schedule(text, timedelta(days=1), _clock(match["hour"], match["minute"]))
    if match := _HOURLY.fullmatch(spec):
        minute = int(match["minute"] or 0)
        if minute > 59:
            raise ValueError(f"hourly@{minute}: the minute must be 0 to 59")
        return Schedule(text, timedelta(hours=1), timedelta(minutes=minute))
    if match := _WEEKLY.fullmatch(spec):
        if match["day"] not in DAYS:
            raise ValueError(f"{match['day']!r} is not a day: use one of {', '.join(DAYS)}")
        offset = timedelta(days=DAYS.index(match["day"])) + _clock(match["hour"], match["minute"])
        return Schedule(text, timedelta(days=7), offset)
    if match := _EVERY.fullmatch(spec):
        count = int(match["count"])
        units = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
        period = timedelta(seconds=units[match["unit"]] * count)
        if period < timedelta(seconds=1) or period > timedelta(days=7):
            raise ValueError(f"{text!r}: the interval must be between 1 second and 7 days")
        return Schedule(text, period, timedelta(0))
    raise ValueError(f"{text!r} is not a schedule: use one of {EXAMPLES} (times are UTC)")
