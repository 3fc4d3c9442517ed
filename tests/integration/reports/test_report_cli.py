"""`gatehouse usage report`: the table and --csv, checked against a computation in Python, filters, the rest summed,
bad options naming themselves, as RUNBOOK "Usage reports" shows them (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gatehouse.cli.common import db_session
from gatehouse.gateway.models import RequestLog
from gatehouse.settings import get_settings
from tests.integration.cli.test_cli import assert_one_plain_line, environment, gatehouse
from tests.integration.reports.expected import MEASURES, People, report

__all__ = ["environment"]

NOVEMBER = datetime(2026, 10, 31, 23, tzinfo=UTC)  # 2026-11-01 00:00 in Paris
DECEMBER = datetime(2026, 11, 30, 23, tzinfo=UTC)


def _key_id(email: str) -> int:
    listed = gatehouse("keys", "list", "--user", email)
    assert listed.exit_code == 0, listed.output
    return int(listed.stdout.split()[0])


def _write(rows: list[dict[str, Any]]) -> None:
    async def go() -> None:
        async with db_session(get_settings()) as session:
            session.add_all(RequestLog(**row) for row in rows)

    get_settings.cache_clear()
    asyncio.run(go())


def _rows(callers: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """120 requests in November (Paris), a few just outside it."""
    rng = random.Random(11)
    span = (DECEMBER - NOVEMBER).total_seconds()
    moments = [NOVEMBER + timedelta(seconds=rng.random() * span) for _ in range(120)]
    moments += [NOVEMBER - timedelta(seconds=1), DECEMBER]
    return [
        {
            "created_at": moment,
            "request_id": f"cli-{n}",
            "user_id": (caller := rng.choice(callers))[0],
            "key_id": caller[1],
            "endpoint": "chat",
            "protocol": "openai",
            "surface": rng.choice(["chat", "messages"]),
            "model": rng.choice(["gpt-4o", "llama3", "qwen"]),
            "upstream": "up",
            "status_code": rng.choice([200, 200, 200, 429]),
            "prompt_tokens": rng.randint(0, 900),
            "completion_tokens": rng.randint(0, 300),
            "cost_nanos": None if rng.random() < 0.25 else rng.randint(1, 10**10),
        }
        for n, moment in enumerate(moments)
    ]


def _csv(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def _measures(line: dict[str, str]) -> dict[str, int]:
    found = {name: int(line[name]) for name in MEASURES if name != "cost_nanos"}
    return {**found, "cost_nanos": int(Decimal(line["cost"]).scaleb(9))}


def test_usage_report_from_the_shell(environment: pytest.MonkeyPatch, database_url: str) -> None:
    environment.setenv("DATABASE_URL", database_url)
    environment.setenv("REDIS_URL", "")
    environment.setenv("QUOTA_TIMEZONE", "Europe/Paris")
    environment.setenv("PRICE_CURRENCY", "EUR")
    environment.setenv("COLUMNS", "200")
    assert gatehouse("db", "upgrade").exit_code == 0
    ids = {}
    for name in ("alice", "bob", "carol"):
        created = gatehouse("users", "create", "--email", f"{name}@example.com", "--with-key")
        assert created.exit_code == 0, created.output
        ids[name] = int(created.stdout.split()[2])
    keys = {name: _key_id(f"{name}@example.com") for name in ids}
    group = gatehouse("groups", "create", "research").stdout.split()[2].rstrip(":")
    for member in ("alice", "bob"):
        assert gatehouse("groups", "add-member", group, f"{member}@example.com").exit_code == 0
    people = People(key_groups={}, memberships={ids["alice"]: [int(group)], ids["bob"]: [int(group)]})
    rows = _rows([(ids[name], keys[name]) for name in ids])
    _write(rows)
    november = ("--from", "2026-11-01", "--to", "2026-11-30")

    # The table: a row per group and model, the rest summed, the totals; costs in EUR.
    table = gatehouse("usage", "report", "--by", "group,model", *november, "--limit", "4")
    assert table.exit_code == 0, table.output
    assert "Usage 2026-11-01 to 2026-11-30 (Europe/Paris), by group, model" in table.stdout
    assert "cost (EUR)" in table.stdout and "research" in table.stdout and "(no group)" in table.stdout
    want = report(rows, people, group_by=("group", "model"), start=NOVEMBER, end=DECEMBER, limit=4)
    lines = [line.split() for line in table.stdout.splitlines()]
    other = next(line for line in lines if line[:1] == ["other"])
    assert other[1] == f"({want.other_rows})"
    assert want.other is not None and _read(other[2:]) == want.other
    total = next(line for line in lines if line[:1] == ["total"])
    assert _read(total[1:]) == want.totals

    # CSV: every row, exactly (the runbook's export of a month by user and model).
    exported = gatehouse("usage", "report", "--by", "user,model", *november, "--csv")
    assert exported.exit_code == 0, exported.output
    parsed = _csv(exported.stdout)
    want = report(rows, people, group_by=("user", "model"), start=NOVEMBER, end=DECEMBER)
    assert [(int(line["user_id"]), line["model"]) for line in parsed[:-1]] == [values for values, _ in want.rows]
    assert [_measures(line) for line in parsed[:-1]] == [measures for _, measures in want.rows]
    emails = {ids[name]: f"{name}@example.com" for name in ids}
    assert all(line["user_email"] == emails[int(line["user_id"])] for line in parsed[:-1])
    assert parsed[-1]["row"] == "total" and _measures(parsed[-1]) == want.totals
    assert {line["currency"] for line in parsed} == {"EUR"}

    # Filters: a user by email, a group; a key's report.
    alice = _csv(gatehouse("usage", "report", "--by", "key", "--user", "alice@example.com", *november, "--csv").stdout)
    want = report(rows, people, group_by=("key",), start=NOVEMBER, end=DECEMBER, filters={"user": ids["alice"]})
    assert [(int(line["key_id"]), _measures(line)) for line in alice[:-1]] == [(v[0], m) for v, m in want.rows]
    assert alice[0]["key_name"] == "cli" and alice[0]["key_prefix"]  # the name `users create --with-key` gives
    research = _csv(gatehouse("usage", "report", "--by", "model", "--group", group, *november, "--csv").stdout)
    want = report(rows, people, group_by=("model",), start=NOVEMBER, end=DECEMBER, filters={"group": int(group)})
    assert [(line["model"], _measures(line)) for line in research[:-1]] == [(v[0], m) for v, m in want.rows]

    # RUNBOOK "Usage reports", as written there.
    whole = gatehouse("usage", "report", "--by", "group,model", "--from", "2026-11-01", "--to", "2026-11-30")
    want = report(rows, people, group_by=("group", "model"), start=NOVEMBER, end=DECEMBER)
    body = [line.split() for line in whole.stdout.splitlines() if line.split()[:1] in (["research"], ["(no"])]
    assert len(body) == len(want.rows) and "other" not in whole.stdout
    paris = datetime.now(ZoneInfo("Europe/Paris"))
    first = paris.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    after = (first + timedelta(days=32)).replace(day=1)
    for command, filters in (
        (["usage", "report"], {}),
        (["usage", "report", "--by", "key", "--user", "alice@example.com"], {"user": ids["alice"]}),
    ):
        this_month = gatehouse(*command)
        assert this_month.exit_code == 0, this_month.output
        total = next(line.split() for line in this_month.stdout.splitlines() if line.split()[:1] == ["total"])
        want = report(rows, people, group_by=("user",), start=first, end=after, filters=filters)
        assert _read(total[1:]) == want.totals
    assert gatehouse("usage", "report", "--by", "model", "--group", group, "--csv").stdout.startswith("row,model,")

    # Bad options name themselves (exit 2); an unknown user is one plain line (exit 1).
    for args, option, says in (
        (("--by", "team"), "--by", "'team'"),
        (("--from", "2026-13-01"), "--from", "YYYY-MM-DD"),
        (("--from", "2026-11-30", "--to", "2026-11-01"), "--to", "after `from`"),
        (("--from", "2025-01-01", "--to", "2026-06-30"), "--to", "at most 366"),
    ):
        refused = gatehouse("usage", "report", *args)
        assert refused.exit_code == 2, (args, refused.output)
        assert f"Invalid {option}:" in refused.stderr and says in refused.stderr, refused.stderr
    assert gatehouse("usage", "report", "--limit", "0").exit_code == 2
    assert_one_plain_line(gatehouse("usage", "report", "--user", "nobody@example.com"), says="nobody@example.com")


def _read(cells: list[str]) -> dict[str, int]:
    """Measures as the table shows them: integers, and the cost in the currency."""
    shown = dict(zip(MEASURES, cells, strict=True))
    return {name: int(Decimal(v).scaleb(9)) if name == "cost_nanos" else int(v) for name, v in shown.items()}
