"""This machine's clock against the database server's (PostgreSQL's now(); on SQLite, Redis's TIME when there is
one) and against the upstreams' HTTP Date headers: quota days and JWT expiry depend on it."""

from __future__ import annotations

from gatehouse.cli.doctor_checks.report import Check, failed, passed, skipped, warned

WARN_SECONDS = 2.0
FAIL_SECONDS = 30.0
FIX = "synchronise this host's clock (NTP: `timedatectl set-ntp true`, chrony) and the other side's"


def judge_skew(name: str, against: str, skew: float) -> Check:
    """A check of one clock difference (seconds, ours minus theirs or the reverse)."""
    size = abs(skew)
    summary = f"this machine's clock is {size:.1f} s {'ahead of' if skew < 0 else 'behind'} {against}"
    if size > FAIL_SECONDS:
        return failed(name, summary, FIX)
    if size > WARN_SECONDS:
        return warned(name, summary, FIX)
    return passed(name, f"within {WARN_SECONDS:g} s of {against} ({size:.2f} s)")


def server_clock(database_offset: float | None, redis_offset: float | None, postgres: bool) -> Check:
    """Against the database server (PostgreSQL) or Redis; SKIP when neither can tell."""
    if database_offset is not None:
        return judge_skew("clock.database", "the PostgreSQL server", database_offset)
    if redis_offset is not None:
        return judge_skew("clock.database", "the Redis server", redis_offset)
    if postgres:
        return skipped("clock.database", "the database did not answer")
    return skipped("clock.database", "SQLite keeps no clock of its own and REDIS_URL is not set")


def date_skew(header: float, local: float) -> float:
    """The upstream's Date (whole seconds) minus our time: 0 while our time lies within that second."""
    if header > local:
        return header - local
    return min(0.0, header + 1 - local)


def upstream_clock(dates: list[tuple[str, float, float]]) -> Check:
    """Against the upstream whose Date header differs most from this machine's clock."""
    if not dates:
        return skipped("clock.upstream", "no upstream answered with a Date header")
    name, header, local = max(dates, key=lambda item: abs(date_skew(item[1], item[2])))
    return judge_skew("clock.upstream", f"upstream {name}'s Date header", date_skew(header, local))
