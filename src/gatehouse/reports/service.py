"""Usage and spend reports, computed in the database: one statement groups the request log, ranks the groups,
sums those past the limit into one row, names what it grouped by, and adds the totals. The same SQL runs on
SQLite and PostgreSQL; no row of the request log is loaded into Python.

A request belongs to the group its key is bound to, else to every group its user is a member of now (the request
log does not record memberships at the time). Requests are summed per user and key first, which leaves a few
hundred rows, and only those are matched to groups. Names (emails, group and key names) are read as they are now.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import CTE, ColumnElement, and_, case, func, literal_column, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.expression import Label
from sqlalchemy.sql.selectable import CompoundSelect, FromClause, Select, Subquery

from gatehouse.auth.models import ApiKey, Group, GroupMember, User
from gatehouse.gateway.models import RequestLog
from gatehouse.gateway.spend import UNPRICED
from gatehouse.reports.query import Dimension, ReportQuery


@dataclass(frozen=True)
class Measures:
    """What a set of requests amounted to; cost in billionths of PRICE_CURRENCY, exact."""

    requests: int = 0
    errors: int = 0  # answered with a status >= 400
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanos: int = 0
    unpriced_requests: int = 0  # tokens of a model without a price: they cost 0


MEASURES = tuple(f.name for f in fields(Measures))

# The columns a dimension's value takes in a row: its id or text, and what names it now.
COLUMNS: dict[Dimension, tuple[str, ...]] = {
    "user": ("user_id", "user_email"),
    "group": ("group_id", "group_name"),
    "key": ("key_id", "key_name", "key_prefix"),
    "model": ("model",),
    "upstream": ("upstream",),
    "surface": ("surface",),
}


@dataclass(frozen=True)
class Row:
    """One group of requests: its dimensions' columns (COLUMNS, in the query's order), and its measures."""

    labels: dict[str, Any]
    measures: Measures


@dataclass(frozen=True)
class Report:
    """The rows by cost then requests (descending), the rest past the limit summed in `other`, and the totals."""

    query: ReportQuery
    rows: list[Row]
    other: Measures | None  # None: every group is a row
    other_rows: int  # how many groups `other` sums
    totals: Measures

    @property
    def columns(self) -> list[str]:
        """The dimensions' columns of every row, in the query's order."""
        return label_columns(self.query)


def label_columns(query: ReportQuery) -> list[str]:
    """The columns naming a row's dimensions, in the order of `group_by`."""
    return [column for dimension in query.group_by for column in COLUMNS[dimension]]


async def report(session: AsyncSession, *, query: ReportQuery) -> Report:
    """The report for `query`, in one statement."""
    result = await session.execute(statement(query, dialect=session.get_bind().dialect.name))
    labels = label_columns(query)
    rows: list[tuple[int, Row]] = []
    other, other_rows, totals = None, 0, Measures()
    for found in result.mappings():
        # PostgreSQL sums a BIGINT into a NUMERIC: back to exact integers.
        measures = Measures(**{name: int(found[name] or 0) for name in MEASURES})
        bucket = int(found["bucket"])
        if bucket == 0:
            totals = measures
        elif bucket > query.limit:
            other, other_rows = measures, int(found["grouped_rows"])
        else:
            rows.append((bucket, Row(labels={column: found[column] for column in labels}, measures=measures)))
    rows.sort(key=lambda ranked: ranked[0])
    return Report(query=query, rows=[row for _, row in rows], other=other, other_rows=other_rows, totals=totals)


# --- the statement ---------------------------------------------------------------------------------------

_LOGGED: dict[Dimension, Any] = {
    "user": RequestLog.user_id,
    "key": RequestLog.key_id,
    "model": RequestLog.model,
    "upstream": RequestLog.upstream,
    "surface": RequestLog.surface,
}
_TEXT: frozenset[Dimension] = frozenset({"model", "upstream", "surface"})


def statement(query: ReportQuery, *, dialect: str) -> CompoundSelect[Any]:
    """Rows ranked 1..limit (`bucket`), one row summing the rest (limit + 1), and the totals (bucket 0)."""
    grouped, counted_once = _grouped(query)
    ranked = _ranked(grouped, query, dialect)
    bucketed = (
        select(
            ranked.c.bucket,
            func.count().label("grouped_rows"),
            # A top bucket holds one group: MIN is its value. The rest's values mean nothing and are not read.
            *(func.min(ranked.c[dimension]).label(dimension) for dimension in query.group_by),
            *_summed(ranked),
        )
        .group_by(ranked.c.bucket)
        .subquery("bucketed")
    )
    named = _named(bucketed, query)
    totals: Select[*tuple[Any, ...]] = select(
        literal_column("0").label("bucket"),
        literal_column("0").label("grouped_rows"),
        *(null().label(column) for column in label_columns(query)),
        *_summed(counted_once),
    )
    return union_all(named, totals)


def _logged_measures() -> list[Label[Any]]:
    """The measures of request-log rows."""
    return [
        func.count().label("requests"),
        func.sum(case((RequestLog.status_code >= 400, 1), else_=0)).label("errors"),
        func.sum(RequestLog.prompt_tokens).label("prompt_tokens"),
        func.sum(RequestLog.completion_tokens).label("completion_tokens"),
        func.coalesce(func.sum(RequestLog.cost_nanos), 0).label("cost_nanos"),
        func.sum(case((UNPRICED, 1), else_=0)).label("unpriced_requests"),
    ]


def _summed(source: FromClause) -> list[Label[Any]]:
    """The measures of rows that are already sums."""
    return [func.sum(source.c[name]).label(name) for name in MEASURES]


def _conditions(query: ReportQuery) -> list[ColumnElement[bool]]:
    """The time range and the filters the request log answers by itself."""
    wanted = query.filters
    conditions = [RequestLog.created_at >= query.start, RequestLog.created_at < query.end]
    for column, value in (
        (RequestLog.user_id, wanted.user_id),
        (RequestLog.key_id, wanted.key_id),
        (RequestLog.model, wanted.model),
        (RequestLog.upstream, wanted.upstream),
        (RequestLog.surface, wanted.surface),
    ):
        if value is not None:
            conditions.append(column == value)
    return conditions


def _logged(dimensions: Iterable[Dimension], query: ReportQuery, name: str) -> CTE:
    """The request log in range, filtered, summed per value of `dimensions` (none of them `group`)."""
    columns = [_LOGGED[dimension] for dimension in dimensions]
    return (
        select(*(column.label(dimension) for column, dimension in zip(columns, dimensions, strict=True)))
        .add_columns(*_logged_measures())
        .where(*_conditions(query))
        .group_by(*columns)
        .cte(name)
    )


def _grouped(query: ReportQuery) -> tuple[CTE, CTE]:
    """The sums per value of the report's dimensions, and sums in which each request counts once (for the totals:
    by group, a request of a user in two groups is in two rows)."""
    if "group" not in query.group_by and query.filters.group_id is None:
        logged = _logged(query.group_by, query, "grouped")
        return logged, logged
    rest = [d for d in query.group_by if d not in ("user", "key", "group")]
    by_key = _logged(["user", "key", *rest], query, "by_key")
    bound = aliased(ApiKey, name="bound_key")
    group = func.coalesce(bound.group_id, GroupMember.group_id)
    attributed = by_key.outerjoin(bound, bound.id == by_key.c.key).outerjoin(
        GroupMember, and_(bound.group_id.is_(None), GroupMember.user_id == by_key.c.user)
    )
    values = [group if dimension == "group" else by_key.c[dimension] for dimension in query.group_by]
    grouped: Select[Any] = (
        select(*(value.label(dimension) for value, dimension in zip(values, query.group_by, strict=True)))
        .add_columns(*_summed(by_key))
        .select_from(attributed)
        .group_by(*values)
    )
    if query.filters.group_id is not None:
        grouped = grouped.where(group == query.filters.group_id)
    cte = grouped.cte("grouped")
    return cte, (by_key if query.rows_may_overlap else cte)


def _ranked(grouped: CTE, query: ReportQuery, dialect: str) -> Subquery:
    """The groups with their bucket: their rank by cost then requests (then their values, for a stable order) up to
    the limit, limit + 1 past it."""
    ties = []
    for dimension in query.group_by:
        column: ColumnElement[Any] = grouped.c[dimension]
        if dimension in _TEXT and dialect == "postgresql":
            column = column.collate("C")  # bytewise, as SQLite compares: the same order on both
        ties.append(column.asc().nulls_last())
    rank = func.row_number().over(order_by=[grouped.c.cost_nanos.desc(), grouped.c.requests.desc(), *ties])
    past: ColumnElement[int] = literal_column(str(query.limit + 1))
    return select(grouped, case((rank < past, rank), else_=past).label("bucket")).subquery("ranked")


def _named(bucketed: Subquery, query: ReportQuery) -> Any:
    """The buckets with what names their users, groups and keys now."""
    source: FromClause = bucketed
    columns: list[Any] = [bucketed.c.bucket, bucketed.c.grouped_rows]
    for dimension in query.group_by:
        value = bucketed.c[dimension]
        if dimension == "user":
            source = source.outerjoin(User, User.id == value)
            columns += [value.label("user_id"), User.email.label("user_email")]
        elif dimension == "group":
            source = source.outerjoin(Group, Group.id == value)
            columns += [value.label("group_id"), Group.name.label("group_name")]
        elif dimension == "key":
            key = aliased(ApiKey, name="named_key")
            source = source.outerjoin(key, key.id == value)
            columns += [value.label("key_id"), key.name.label("key_name"), key.prefix.label("key_prefix")]
        else:
            columns.append(value.label(dimension))
    return select(*columns, *(bucketed.c[name] for name in MEASURES)).select_from(source)
