"""bench/report_bench.py on a few thousand rows: the reports it times are right (against a computation in Python
over the same generated rows), and its timing and table run (SQLite and PostgreSQL). No timing is asserted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bench import report_bench
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.db import migrate
from gatehouse.db.engine import create_engine, create_sessionmaker, read_only
from gatehouse.reports import service
from gatehouse.reports.query import Filters, ReportQuery
from gatehouse.settings import Settings
from tests.integration.reports.expected import People, report

SHAPE = report_bench.Shape(rows=3_000)
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
SEED = 3


async def _report(engine: AsyncEngine, query: ReportQuery) -> service.Report:
    async with create_sessionmaker(read_only(engine))() as session, session.begin():
        return await service.report(session, query=query)


async def test_the_benchmark_reports_are_right(database_url: str) -> None:
    await migrate.upgrade(database_url)
    engine = create_engine(Settings(_env_file=None, database_url=database_url))  # type: ignore[call-arg]
    try:
        made = await report_bench.fill(engine, SHAPE, now=NOW, seed=SEED)
        rows = list(report_bench.request_rows(SHAPE, made, now=NOW, seed=SEED))
        assert len(rows) == SHAPE.rows
        assert {r["model"] for r in rows} == {m[0] for m in report_bench.MODELS}
        assert {r["surface"] for r in rows} == set(report_bench.SURFACES)
        assert {r["upstream"] for r in rows} == {"openai", "anthropic", "ollama-gpu", None}
        people = People(
            key_groups={key: group for key, (_, group, _, _) in made.keys.items()}, memberships=made.memberships
        )
        assert any(len(groups) == 2 for groups in made.memberships.values())  # some users count in two groups
        assert any(group is not None for group in people.key_groups.values())  # some keys are project keys
        start = NOW - timedelta(days=SHAPE.days)
        cases = [(group_by, Filters()) for group_by in report_bench.REPORTS]
        group = next(iter(made.group_names))
        cases += [(("key", "surface"), Filters(group_id=group)), (("user", "upstream"), Filters(model="gpt-4o"))]
        for group_by, filters in cases:
            got = await _report(engine, ReportQuery(group_by=group_by, start=start, end=NOW, filters=filters, limit=20))
            wanted = {"group": filters.group_id, "model": filters.model}
            want = report(rows, people, group_by=group_by, start=start, end=NOW, filters=wanted, limit=20)
            columns = {"user": "user_id", "group": "group_id", "key": "key_id"}
            values = [tuple(row.labels[columns.get(d, d)] for d in group_by) for row in got.rows]
            assert values == [v for v, _ in want.rows], group_by
            assert [vars(row.measures) for row in got.rows] == [m for _, m in want.rows], group_by
            assert vars(got.totals) == want.totals and got.other_rows == want.other_rows
            assert (got.other and vars(got.other)) == want.other
            for row in got.rows:
                if "user" in group_by:
                    assert row.labels["user_email"] == made.emails[row.labels["user_id"]]
                if "group" in group_by and row.labels["group_id"] is not None:
                    assert row.labels["group_name"] == made.group_names[row.labels["group_id"]]
        whole = await _report(engine, ReportQuery(group_by=("model",), start=start, end=NOW))
        assert whole.totals.requests == len(rows)  # every generated row is in the window
        assert whole.totals.cost_nanos == sum(r["cost_nanos"] or 0 for r in rows)

        timings = await report_bench.time_reports(engine, start=start, end=NOW, runs=1)
        assert [t.group_by for t in timings] == list(report_bench.REPORTS)
        printed = report_bench.table(timings, SHAPE.rows)
        assert printed.count("\n") == 1 + len(report_bench.REPORTS) and "by group + model" in printed
    finally:
        await engine.dispose()
