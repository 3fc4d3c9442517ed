"""GET /admin/usage/report: every dimension and combination checked exactly against a computation in Python, the
rest summed past the limit, filters, names, unpriced requests, CSV, the time range in QUOTA_TIMEZONE, bad input,
and who may read it (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gatehouse.gateway.models import RequestLog
from gatehouse.reports.query import DIMENSIONS
from tests.conftest import Harness, make_settings, running_app
from tests.integration.reports.expected import MEASURES, People, report
from tests.support.accounts import create_member, error_of

ZONE = "Europe/Paris"  # UTC+1 in March until the 29th, UTC+2 after: dates must follow it
MARCH = datetime(2026, 2, 28, 23, tzinfo=UTC)  # 2026-03-01 00:00 in Paris
APRIL = datetime(2026, 3, 31, 22, tzinfo=UTC)  # 2026-04-01 00:00 in Paris
MODELS = ("gpt-4o", "llama3", "=HYPERLINK(1)")  # one a client chose to look like a spreadsheet formula
UPSTREAMS = ("openai", "ollama", None)  # None: refused before any upstream
SURFACES = ("chat", "responses", "messages", "embeddings", None)
STATUSES = (200, 200, 200, 200, 429, 400, 502)


@dataclass
class World:
    """Users, groups and keys made through the API, and the request-log rows written for them."""

    harness: Harness
    people: People
    emails: dict[int, str]
    group_names: dict[int, str]
    key_names: dict[int, tuple[str, str]]  # id -> name, prefix
    rows: list[dict[str, Any]]
    ids: dict[str, int]


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """alice (research), bob (research and ops; his ops-bot key bound to ops), dave (ops), carol (no group), and the
    bootstrap admin; 400 requests over March in Paris, and some just outside it."""
    settings = make_settings(database_url, tmp_path, quota_timezone=ZONE, price_currency="EUR")
    async with running_app(settings) as harness:
        client = harness.client
        alice, bob, carol, dave = [await create_member(harness) for _ in range(4)]
        groups = {}
        for name in ("research", "ops", "idle"):
            created = await client.post("/admin/groups", json={"name": name})
            assert created.status_code == 201, created.text
            groups[name] = created.json()["id"]
        for group, member in (("research", alice), ("research", bob), ("ops", bob), ("ops", dave)):
            assert (await client.put(f"/admin/groups/{groups[group]}/members/{member.id}")).status_code == 200
        bot = await client.post(f"/admin/users/{bob.id}/keys", json={"name": "ops-bot", "group_id": groups["ops"]})
        odd = await client.post(f"/admin/users/{carol.id}/keys", json={"name": "=SUM(A1)"})
        assert bot.status_code == odd.status_code == 201, bot.text + odd.text
        me = (await client.get("/me")).json()
        admin_key = (await client.get("/me/keys")).json()[0]["id"]

        users = {u["id"]: u["email"] for u in (await client.get("/admin/users", params={"limit": 100})).json()["items"]}
        keys = {}
        for user_id in users:
            for key in (await client.get("/admin/keys", params={"user_id": user_id})).json()["items"]:
                keys[key["id"]] = (key["name"], key["prefix"])
        people = People(
            key_groups={bot.json()["id"]: groups["ops"]},
            memberships={
                alice.id: [groups["research"]],
                bob.id: [groups["research"], groups["ops"]],
                dave.id: [groups["ops"]],
            },
        )
        callers = [
            (alice.id, alice.key_id),
            (bob.id, bob.key_id),
            (bob.id, bot.json()["id"]),
            (carol.id, carol.key_id),
            (carol.id, odd.json()["id"]),
            (dave.id, dave.key_id),
            (me["id"], admin_key),
            (None, None),  # a request nobody could be named for
        ]
        rows = _requests(random.Random(16), callers)
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            session.add_all(RequestLog(**row) for row in rows)
        yield World(
            harness=harness,
            people=people,
            emails=users,
            group_names={v: k for k, v in groups.items()},
            key_names=keys,
            rows=rows,
            ids={
                "alice": alice.id,
                "bob": bob.id,
                "carol": carol.id,
                "dave": dave.id,
                **groups,
                "bot": bot.json()["id"],
            },
        )


def _requests(rng: random.Random, callers: list[tuple[int | None, int | None]]) -> list[dict[str, Any]]:
    """400 requests spread over March (Paris), with exact edges: the first moment in, the last out, a few around."""
    span = (APRIL - MARCH).total_seconds()
    moments = [MARCH + timedelta(seconds=rng.random() * span) for _ in range(400)]
    moments += [MARCH, MARCH - timedelta(microseconds=1), APRIL, APRIL - timedelta(microseconds=1)]
    rows = []
    for n, moment in enumerate(moments):
        user_id, key_id = rng.choice(callers)
        prompt, completion = rng.choice([(0, 0), (rng.randint(1, 5000), rng.randint(0, 3000))])
        priced = rng.random() < 0.8
        rows.append(
            {
                "created_at": moment,
                "request_id": f"req-{n}",
                "user_id": user_id,
                "key_id": key_id,
                "endpoint": "chat",
                "protocol": "openai",
                "surface": rng.choice(SURFACES),
                "model": rng.choice(MODELS),
                "upstream": rng.choice(UPSTREAMS),
                "status_code": rng.choice(STATUSES),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                # up to a thousand of the currency per request: the sums must stay exact
                "cost_nanos": rng.choice([0, 1, 999_999_999_999, rng.randint(1, 10**12)]) if priced else None,
            }
        )
    return rows


async def get_report(world: World, **params: Any) -> dict[str, Any]:
    response = await world.harness.client.get("/admin/usage/report", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _values(row: dict[str, Any], group_by: tuple[str, ...]) -> tuple[Any, ...]:
    column = {"user": "user_id", "group": "group_id", "key": "key_id"}
    return tuple(row[column.get(name, name)] for name in group_by)


def _measures(row: dict[str, Any]) -> dict[str, int]:
    return {name: row[name] for name in MEASURES}


def assert_matches(world: World, body: dict[str, Any], group_by: tuple[str, ...], **filters: Any) -> None:
    """The answer is the Python computation's, row for row, with names and exact costs."""
    want = report(
        world.rows, world.people, group_by=group_by, start=MARCH, end=APRIL, filters=filters, limit=body["limit"]
    )
    got = [(_values(row, group_by), _measures(row)) for row in body["rows"]]
    assert got == want.rows, group_by
    assert _measures(body["totals"]) == want.totals
    assert (body["other"] and _measures(body["other"])) == want.other
    for row in [*body["rows"], body["totals"]]:
        assert Decimal(str(row["cost"])) == Decimal(row["cost_nanos"]).scaleb(-9)  # exact while it fits a float
    for row in body["rows"]:
        if "user" in group_by:
            assert row["user_email"] == world.emails.get(row["user_id"])
        if "group" in group_by:
            assert row["group_name"] == world.group_names.get(row["group_id"])
        if "key" in group_by:
            assert (row["key_name"], row["key_prefix"]) == world.key_names.get(row["key_id"], (None, None))
        for name in set(DIMENSIONS) - set(group_by):  # a dimension not grouped by is null in every row
            columns = {"user": ["user_id", "user_email"], "group": ["group_id", "group_name"]}
            columns["key"] = ["key_id", "key_name", "key_prefix"]
            assert all(row[column] is None for column in columns.get(name, [name]))


async def test_every_dimension_and_combination_matches_python(world: World) -> None:
    for size in range(1, len(DIMENSIONS) + 1):
        for group_by in itertools.combinations(DIMENSIONS, size):
            body = await get_report(world, group_by=",".join(group_by), **{"from": "2026-03-01", "to": "2026-03-31"})
            assert body["group_by"] == list(group_by) and body["limit"] == 100
            assert body["rows_may_overlap"] == ("group" in group_by)
            assert_matches(world, body, group_by)
    # The order given is the columns' order; repeated parameters work as commas do; a dimension once.
    body = await get_report(
        world, group_by=["model", "group,user", "model"], **{"from": "2026-03-01", "to": "2026-03-31"}
    )
    assert body["group_by"] == ["model", "group", "user"]
    assert_matches(world, body, ("model", "group", "user"))


async def test_a_request_counts_in_each_group_of_its_user_and_once_in_the_totals(world: World) -> None:
    body = await get_report(world, group_by="group", **{"from": "2026-03-01", "to": "2026-03-31"})
    by_group = {row["group_name"]: row for row in body["rows"]}
    assert set(by_group) == {"research", "ops", None}  # `idle` has no member who asked anything
    assert sum(row["requests"] for row in body["rows"]) > body["totals"]["requests"]  # bob's count twice
    in_range = [r for r in world.rows if MARCH <= r["created_at"] < APRIL]
    assert body["totals"]["requests"] == len(in_range)
    # bob's ops-bot key is bound to ops: its requests are not research's.
    bot = [r for r in in_range if r["key_id"] == world.ids["bot"]]
    research = await get_report(
        world, group_by="key", group_id=world.ids["research"], **{"from": "2026-03-01", "to": "2026-03-31"}
    )
    assert bot and world.ids["bot"] not in {row["key_id"] for row in research["rows"]}
    assert research["rows_may_overlap"] is False


async def test_limit_sums_the_rest_into_one_row(world: World) -> None:
    group_by = ("user", "model")
    body = await get_report(world, group_by="user,model", limit=3, **{"from": "2026-03-01", "to": "2026-03-31"})
    assert len(body["rows"]) == 3 and body["other"] is not None
    want = report(world.rows, world.people, group_by=group_by, start=MARCH, end=APRIL, limit=3)
    assert body["other"]["rows"] == want.other_rows > 0
    assert_matches(world, body, group_by)
    everything = await get_report(world, group_by="user,model", **{"from": "2026-03-01", "to": "2026-03-31"})
    assert everything["other"] is None and len(everything["rows"]) == 3 + want.other_rows
    for name in MEASURES:
        assert sum(r[name] for r in body["rows"]) + body["other"][name] == body["totals"][name]


async def test_filters(world: World) -> None:
    ids = world.ids
    cases: list[dict[str, Any]] = [
        {"user_id": ids["bob"]},
        {"key_id": ids["bot"]},
        {"group_id": ids["research"]},
        {"group_id": ids["ops"]},
        {"group_id": ids["idle"]},
        {"model": "llama3"},
        {"upstream": "ollama"},
        {"surface": "responses"},
        {"model": "gpt-4o", "surface": "chat", "group_id": ids["ops"]},
        {"user_id": ids["bob"], "group_id": ids["research"]},
        {"model": "no-such-model"},
    ]
    for filters in cases:
        for group_by in (("user",), ("group",), ("key", "model"), ("group", "upstream", "surface")):
            params = {"group_by": ",".join(group_by), "from": "2026-03-01", "to": "2026-03-31", **filters}
            body = await get_report(world, **params)
            mapped = {name.removesuffix("_id"): value for name, value in filters.items()}
            assert_matches(world, body, group_by, **mapped)
            if "group_id" in filters:
                assert body["rows_may_overlap"] is False


async def test_unpriced_requests_are_flagged_and_cost_nothing(world: World) -> None:
    body = await get_report(world, group_by="model", **{"from": "2026-03-01", "to": "2026-03-31"})
    in_range = [r for r in world.rows if MARCH <= r["created_at"] < APRIL]
    unpriced = [r for r in in_range if r["cost_nanos"] is None and r["prompt_tokens"] + r["completion_tokens"] > 0]
    no_tokens = [r for r in in_range if r["cost_nanos"] is None and r["prompt_tokens"] + r["completion_tokens"] == 0]
    assert unpriced and no_tokens  # both kinds are there: only the first is flagged
    assert body["totals"]["unpriced_requests"] == len(unpriced)
    assert body["totals"]["cost_nanos"] == sum(r["cost_nanos"] or 0 for r in in_range)
    assert body["currency"] == "EUR" and body["timezone"] == ZONE


async def test_csv_by_parameter_and_by_accept_header(world: World) -> None:
    params = {"group_by": "key,model", "from": "2026-03-01", "to": "2026-03-31", "limit": 5}
    body = await get_report(world, **params)
    for response in (
        await world.harness.client.get("/admin/usage/report", params={**params, "format": "csv"}),
        await world.harness.client.get("/admin/usage/report", params=params, headers={"accept": "text/csv"}),
    ):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert 'filename="usage-report-' in response.headers["content-disposition"]
        assert response.text.count("\r\n") == len(body["rows"]) + 3  # header, rows, other, total
        lines = list(csv.DictReader(io.StringIO(response.text)))
        assert list(lines[0]) == [
            *("row", "key_id", "key_name", "key_prefix", "model"),
            *("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "unpriced_requests", "currency"),
        ]
        assert [line["row"] for line in lines] == ["row"] * len(body["rows"]) + ["other", "total"]
        for line, row in zip(lines, [*body["rows"], body["other"], body["totals"]], strict=True):
            assert Decimal(line["cost"]) == Decimal(row["cost_nanos"]).scaleb(-9) and line["currency"] == "EUR"
            for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "unpriced_requests"):
                assert int(line[name]) == row[name]
            if line["row"] != "row":
                assert line["key_id"] == line["model"] == ""
                continue
            assert line["key_id"] == ("" if row["key_id"] is None else str(row["key_id"]))
            # Cells a spreadsheet would run as a formula are text.
            for name in ("key_name", "model"):
                value = row[name] or ""
                assert line[name] == ("'" + value if value[:1] in ("=", "+", "-", "@") else value)
        assert any(line["model"] == "'=HYPERLINK(1)" for line in lines)
    json_anyway = await world.harness.client.get(
        "/admin/usage/report", params={**params, "format": "json"}, headers={"accept": "text/csv"}
    )
    assert json_anyway.json() == body


async def test_the_range_follows_quota_timezone(world: World) -> None:
    """Dates are days in QUOTA_TIMEZONE (`to` included); datetimes are instants (`to` excluded); a datetime without
    an offset is in QUOTA_TIMEZONE; the default is this month."""
    day = await get_report(world, group_by="model", **{"from": "2026-03-10", "to": "2026-03-10"})
    begin, end = datetime(2026, 3, 9, 23, tzinfo=UTC), datetime(2026, 3, 10, 23, tzinfo=UTC)
    assert (day["from"], day["to"]) == ("2026-03-09T23:00:00Z", "2026-03-10T23:00:00Z")
    want = report(world.rows, world.people, group_by=("model",), start=begin, end=end)
    assert [(r["model"],) for r in day["rows"]] == [values for values, _ in want.rows]
    # After the change to summer time (29 March), a day starts at 22:00 UTC.
    summer = await get_report(world, group_by="model", **{"from": "2026-03-30", "to": "2026-03-31"})
    assert (summer["from"], summer["to"]) == ("2026-03-29T22:00:00Z", APRIL.isoformat().replace("+00:00", "Z"))

    instants = {"from": "2026-03-05T12:30:00Z", "to": "2026-03-20T08:00:00+01:00"}
    body = await get_report(world, group_by="user", **instants)
    start, stop = datetime(2026, 3, 5, 12, 30, tzinfo=UTC), datetime(2026, 3, 20, 7, tzinfo=UTC)
    want = report(world.rows, world.people, group_by=("user",), start=start, end=stop)
    assert body["totals"]["requests"] == want.totals["requests"] > 0
    assert [_values(r, ("user",)) for r in body["rows"]] == [values for values, _ in want.rows]
    naive = await get_report(world, group_by="user", **{"from": "2026-03-05T13:30:00", "to": "2026-03-20T08:00:00"})
    assert naive["totals"] == body["totals"] and naive["from"] == "2026-03-05T12:30:00Z"

    only_to = await get_report(world, group_by="user", to="2026-03-31")  # the whole month of `to`
    assert (only_to["from"], only_to["totals"]) == ("2026-02-28T23:00:00Z", (await march(world))["totals"])
    this_month = await get_report(world)  # default: this month, by user; March 2026 is long gone
    assert this_month["group_by"] == ["user"] and this_month["totals"]["requests"] == 0
    now = datetime.now(UTC)
    assert datetime.fromisoformat(this_month["from"]) <= now < datetime.fromisoformat(this_month["to"])
    since = await get_report(world, **{"from": "2026-03-31"})  # only `from`: until now
    assert since["totals"]["requests"] == sum(1 for r in world.rows if r["created_at"] >= APRIL - timedelta(days=1))


async def march(world: World) -> dict[str, Any]:
    return await get_report(world, group_by="user", **{"from": "2026-03-01", "to": "2026-03-31"})


async def test_bad_input_is_refused_naming_the_parameter(world: World) -> None:
    month = {"from": "2026-03-01", "to": "2026-03-31"}
    cases: list[tuple[dict[str, Any], int, str, str, str]] = [
        ({"group_by": "user,team"}, 400, "unknown_dimension", "group_by", "'team'"),
        ({"group_by": ","}, 400, "unknown_dimension", "group_by", "group by one or more of"),
        ({"from": "2026-03-31", "to": "2026-03-01"}, 400, "invalid_range", "to", "must be after `from`"),
        ({"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T10:00:00Z"}, 400, "invalid_range", "to", "after"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, 400, "invalid_range", "to", "at most 366"),
        ({"from": "01/03/2026"}, 400, "invalid_range", "from", "YYYY-MM-DD"),
        ({"from": "2026-02-30"}, 400, "invalid_range", "from", "'2026-02-30'"),
        ({"to": "2026-03-01T10:00:00 01:00"}, 400, "invalid_range", "to", "%2B"),
        ({"limit": 0}, 422, "validation_error", "limit", "limit"),
        ({"format": "xml"}, 422, "validation_error", "format", "format"),
        ({"user_id": "bob"}, 422, "validation_error", "user_id", "user_id"),
        ({"group_id": 2**31}, 422, "validation_error", "group_id", "group_id"),
    ]
    for params, status, code, param, says in cases:
        response = await world.harness.client.get("/admin/usage/report", params={**month, **params})
        assert response.status_code == status, (params, response.text)
        error = error_of(response)
        assert (error["code"], error["param"]) == (code, param), params
        assert says in error["message"], (params, error["message"])
    # A whole leap year is allowed: 366 days.
    assert (
        await world.harness.client.get("/admin/usage/report", params={"from": "2024-01-01", "to": "2024-12-31"})
    ).status_code == 200


async def test_monitors_read_reports_and_users_do_not(world: World) -> None:
    monitor = await create_member(world.harness, "monitor")
    user = await create_member(world.harness)
    as_monitor = await world.harness.client.get(
        "/admin/usage/report", params={"format": "csv"}, headers=world.harness.as_key(monitor.key)
    )
    assert as_monitor.status_code == 200 and as_monitor.text.startswith("row,user_id,user_email,")
    refused = await world.harness.client.get("/admin/usage/report", headers=world.harness.as_key(user.key))
    assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden"


async def test_the_runbook_usage_reports_section_through_the_api(world: World) -> None:
    """RUNBOOK "Usage reports", its API calls: this month by user, a group's spend by model in CSV, a range by
    group and model with the rest summed."""
    client = world.harness.client
    assert (await client.get("/admin/usage/report")).status_code == 200
    research = world.ids["research"]
    by_model = await client.get(
        f"/admin/usage/report?group_by=model&group_id={research}&from=2026-03-01&to=2026-03-31&format=csv"
    )
    assert by_model.status_code == 200 and by_model.text.startswith("row,model,")
    ranged = await client.get("/admin/usage/report?group_by=group,model&from=2026-03-01&to=2026-03-31&limit=20")
    assert ranged.status_code == 200
    assert_matches(world, ranged.json(), ("group", "model"))
