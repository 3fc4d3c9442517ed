"""Usage reports computed in Python from the request-log rows a test wrote: what the database must answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MEASURES = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_nanos", "unpriced_requests")
LOGGED = {"user": "user_id", "key": "key_id", "model": "model", "upstream": "upstream", "surface": "surface"}


@dataclass(frozen=True)
class People:
    """Who is in which group now: each key's bound group (None: not bound), each user's memberships."""

    key_groups: Mapping[int, int | None]
    memberships: Mapping[int, Sequence[int]]

    def groups_of(self, row: Mapping[str, Any]) -> list[int | None]:
        """The groups a request belongs to: its key's, else its user's (each), else none."""
        bound = self.key_groups.get(row["key_id"]) if row["key_id"] is not None else None
        if bound is not None:
            return [bound]
        return list(self.memberships.get(row["user_id"], ())) or [None]


@dataclass
class Expected:
    """The rows (dimension values -> measures, in report order), the rest summed, the totals."""

    rows: list[tuple[tuple[Any, ...], dict[str, int]]]
    other: dict[str, int] | None
    other_rows: int
    totals: dict[str, int] = field(default_factory=dict)


def measures_of(row: Mapping[str, Any]) -> dict[str, int]:
    """One request's measures."""
    used = row["prompt_tokens"] + row["completion_tokens"]
    return {
        "requests": 1,
        "errors": int(row["status_code"] >= 400),
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "cost_nanos": row["cost_nanos"] or 0,
        "unpriced_requests": int(row["cost_nanos"] is None and used > 0),
    }


def add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for name in MEASURES:
        total[name] = total.get(name, 0) + more[name]


def zero() -> dict[str, int]:
    return dict.fromkeys(MEASURES, 0)


def _order(item: tuple[tuple[Any, ...], dict[str, int]]) -> tuple[Any, ...]:
    values, measures = item
    # Cost, then requests, descending; then each value ascending, none last (strings by code point, as bytes).
    ties = tuple((value is None, value if value is not None else 0) for value in values)
    return (-measures["cost_nanos"], -measures["requests"], *ties)


def report(
    rows: Iterable[Mapping[str, Any]],
    people: People,
    *,
    group_by: Sequence[str],
    start: datetime,
    end: datetime,
    filters: Mapping[str, Any] | None = None,
    limit: int = 10_000,
) -> Expected:
    """The report the database should give for these rows."""
    wanted = {name: value for name, value in (filters or {}).items() if value is not None}
    sums: dict[tuple[Any, ...], dict[str, int]] = {}
    totals = zero()
    for row in rows:
        if not start <= row["created_at"] < end:
            continue
        if any(row[LOGGED[name]] != value for name, value in wanted.items() if name != "group"):
            continue
        groups = people.groups_of(row)
        if "group" in wanted:
            if wanted["group"] not in groups:
                continue
            groups = [wanted["group"]]
        measures = measures_of(row)
        add(totals, measures)
        for group in groups if "group" in group_by else [None]:
            values = tuple(group if name == "group" else row[LOGGED[name]] for name in group_by)
            add(sums.setdefault(values, zero()), measures)
    ordered = sorted(sums.items(), key=_order)
    rest = ordered[limit:]
    other = None
    if rest:
        other = zero()
        for _, measures in rest:
            add(other, measures)
    return Expected(rows=ordered[:limit], other=other, other_rows=len(rest), totals=totals)
