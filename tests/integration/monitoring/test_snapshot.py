"""GET /admin/metrics: the operator snapshot from stored data, exact on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

from gatehouse.db.base import utcnow
from gatehouse.db.engine import create_engine
from gatehouse.gateway.models import RequestLog
from gatehouse.limits.prices.money import decimal_of_nanos, json_number
from gatehouse.monitoring.models import OpsSample
from gatehouse.monitoring.sampler import OpsSampler
from tests.conftest import Harness, make_settings, running_app

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
# (status, error code, reaches an upstream, has a first token): every way a logged request can end.
OUTCOMES = [
    (200, None, True, True),
    (200, None, True, False),  # an embedding: no first token
    (429, "quota_exceeded", False, False),
    (429, "rate_limited", False, False),
    (502, "upstream_error", True, False),
    (504, "upstream_timeout", True, False),
    (429, "upstream_rate_limited", True, False),
    (500, "internal_error", True, True),
    (410, "terminated_by_operator", True, True),
    (499, "client_disconnected", True, True),
    (404, "model_not_found", True, False),
]


def _nearest_rank(values: list[float], percent: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[-(-percent * len(ordered) // 100) - 1]


def _expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the snapshot must say about these rows, computed the plain way."""

    def count(predicate: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for r in rows if predicate(r))

    def is_error(r: dict[str, Any]) -> bool:
        return bool(r["status_code"] >= 500 or (r["error_code"] or "").startswith("upstream_"))

    def started(row: dict[str, Any]) -> bool:
        return bool(row["stream"]) and row["upstream"] is not None

    latencies = [r["latency_ms"] for r in rows if r["upstream"] is not None]
    ttfts = [r["ttft_ms"] for r in rows if r["ttft_ms"] is not None]
    errors = count(is_error)
    cost = sum(r["cost_nanos"] or 0 for r in rows)
    return {
        "requests": len(rows),
        "succeeded": count(lambda r: r["status_code"] < 400),
        "errors": errors,
        "error_rate": errors / len(rows) if rows else None,
        "quota_blocks": count(lambda r: r["error_code"] == "quota_exceeded"),
        "rate_limit_hits": count(lambda r: r["error_code"] == "rate_limited"),
        "latency_ms": {"p50": _nearest_rank(latencies, 50), "p95": _nearest_rank(latencies, 95)},
        "ttft_ms": {"p50": _nearest_rank(ttfts, 50), "p95": _nearest_rank(ttfts, 95)},
        "streams": {
            "started": count(lambda r: started(r)),
            "completed": count(lambda r: started(r) and r["status_code"] == 200),
            "terminated": count(lambda r: started(r) and r["error_code"] == "terminated_by_operator"),
            "disconnected": count(lambda r: started(r) and r["error_code"] == "client_disconnected"),
            "failed": count(lambda r: started(r) and is_error(r)),
        },
        "tokens_in": sum(r["prompt_tokens"] for r in rows),
        "tokens_out": sum(r["completion_tokens"] for r in rows),
        "cost": json_number(decimal_of_nanos(cost)),
        "cost_nanos": cost,
        "unpriced_requests": count(
            lambda r: r["cost_nanos"] is None and r["prompt_tokens"] + r["completion_tokens"] > 0
        ),
    }


def _rows(rng: random.Random, count: int, *, age: tuple[float, float]) -> list[dict[str, Any]]:
    """Request-log rows created between age[0] and age[1] hours ago."""
    now = utcnow()
    rows = []
    for i in range(count):
        status, code, reached, has_ttft = rng.choice(OUTCOMES)
        # Some latencies repeat: ties must not change a percentile.
        latency = rng.choice([12.5, 80.0, 80.0]) if i % 7 == 0 else round(rng.uniform(1, 5000), 3)
        rows.append(
            {
                "created_at": now - timedelta(hours=rng.uniform(*age)),
                "request_id": f"req-{rng.getrandbits(48):012x}",
                "user_id": rng.randint(1, 5),
                "key_id": None,
                "endpoint": "chat",
                "protocol": "openai",
                "model": rng.choice(["alpha", "beta", "gamma-large"]),
                "upstream": rng.choice(["ollama-1", "vllm-2"]) if reached else None,
                "stream": rng.random() < 0.5,
                "status_code": status,
                "error_code": code,
                "prompt_tokens": rng.randint(0, 400) if reached else 0,
                "completion_tokens": rng.randint(0, 900) if reached else 0,
                "usage_reported": True,
                "latency_ms": latency,
                "ttft_ms": round(rng.uniform(0.5, latency), 3) if has_ttft else None,
                # Priced (up to 10 units of the currency), or a model without a price.
                "cost_nanos": rng.randint(0, 10**10) if rng.random() < 0.7 else None,
            }
        )
    return rows


async def _store(harness: Harness, rows: list[dict[str, Any]]) -> None:
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        await session.execute(insert(RequestLog), [dict(r) for r in rows])


def _check(snapshot: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The whole snapshot (totals, every model, every upstream) against the plain computation."""
    assert snapshot["totals"] == _expected(rows)
    models = {m["model"]: m for m in snapshot["by_model"]}
    assert set(models) == {r["model"] for r in rows}
    for name, stats in models.items():
        assert stats == {"model": name, **_expected([r for r in rows if r["model"] == name])}, name
    upstreams = {u["upstream"]: u for u in snapshot["by_upstream"]}
    assert set(upstreams) == {r["upstream"] for r in rows}
    for name, stats in upstreams.items():
        assert stats == {"upstream": name, **_expected([r for r in rows if r["upstream"] == name])}, name
    for groups in (snapshot["by_model"], snapshot["by_upstream"]):  # busiest first
        assert [g["requests"] for g in groups] == sorted((g["requests"] for g in groups), reverse=True)


async def test_snapshot_is_exact_overall_per_model_and_per_upstream(harness: Harness) -> None:
    rng = random.Random(20261122)
    recent = _rows(rng, 157, age=(0.01, 23.5))
    older = _rows(rng, 41, age=(30, 70))
    await _store(harness, recent + older)

    day = await harness.client.get("/admin/metrics")
    assert day.status_code == 200, day.text
    body = day.json()
    assert body["days"] == 1 and body["minutes"] is None
    assert set(body) == {"days", "minutes", "from", "to", "totals", "by_model", "by_upstream", "sql"}
    _check(body, recent)

    three = (await harness.client.get("/admin/metrics", params={"days": 3})).json()
    assert three["days"] == 3
    _check(three, recent + older)
    # Refusals before any upstream are their own group; they have no latency to rank.
    refused = next(u for u in three["by_upstream"] if u["upstream"] is None)
    assert refused["quota_blocks"] + refused["rate_limit_hits"] == refused["requests"] > 0
    assert refused["latency_ms"] == {"p50": None, "p95": None}


async def test_a_window_of_minutes_counts_only_its_own_requests(harness: Harness) -> None:
    rng = random.Random(20261123)
    # Hours are 60 minutes: the last 10 minutes, the 10 to 50 minutes before them, and older.
    last_ten = _rows(rng, 23, age=(0.0, 9.5 / 60))
    earlier = _rows(rng, 31, age=(10.5 / 60, 50 / 60))
    older = _rows(rng, 7, age=(2, 20))
    await _store(harness, last_ten + earlier + older)

    ten = await harness.client.get("/admin/metrics", params={"minutes": 10})
    assert ten.status_code == 200, ten.text
    body = ten.json()
    assert body["minutes"] == 10 and body["days"] is None
    assert datetime.fromisoformat(body["to"]) - datetime.fromisoformat(body["from"]) == timedelta(minutes=10)
    _check(body, last_ten)
    _check((await harness.client.get("/admin/metrics", params={"minutes": 60})).json(), last_ten + earlier)
    _check((await harness.client.get("/admin/metrics", params={"minutes": 1440})).json(), last_ten + earlier + older)


async def test_minutes_out_of_range_or_with_days_is_422(harness: Harness) -> None:
    for minutes in ("0", "1441", "-5", "ten", "2.5"):
        response = await harness.client.get("/admin/metrics", params={"minutes": minutes})
        assert response.status_code == 422, (minutes, response.text)
        assert response.json()["error"]["param"] == "minutes", response.text
    both = await harness.client.get("/admin/metrics", params={"minutes": 5, "days": 1})
    assert both.status_code == 422 and both.json()["error"]["param"] == "minutes", both.text


async def test_an_empty_window_is_all_zeros(harness: Harness) -> None:
    body = (await harness.client.get("/admin/metrics", params={"days": 90})).json()
    assert body["totals"] == _expected([])
    assert body["by_model"] == [] and body["by_upstream"] == []


async def test_days_out_of_range_is_422(harness: Harness) -> None:
    for days in ("0", "91", "-1", "seven", "1.5"):
        response = await harness.client.get("/admin/metrics", params={"days": days})
        assert response.status_code == 422, (days, response.text)
        assert response.json()["error"]["param"] == "days", response.text


async def _user_key(harness: Harness, role: str = "user", **quota: int) -> str:
    email = f"snapshot-{os.urandom(3).hex()}@example.com"
    created = await harness.client.post("/admin/users", json={"email": email, "role": role})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    if quota:
        assert (await harness.client.patch(f"/admin/users/{user_id}", json=quota)).status_code == 200
    key = await harness.client.post(f"/admin/users/{user_id}/keys", json={"name": "k"})
    assert key.status_code == 201, key.text
    value: str = key.json()["key"]
    return value


async def test_gateway_traffic_shows_up_after_the_request_log_flush(harness: Harness) -> None:
    client = harness.client
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    blocked = await _user_key(harness, messages_per_day=0)
    refused = await client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(blocked))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    await harness.runtime.request_log.flush()

    body = (await client.get("/admin/metrics")).json()
    totals = body["totals"]
    assert totals["requests"] == 3
    assert totals["succeeded"] == 2 and totals["errors"] == 0 and totals["error_rate"] == 0
    assert totals["quota_blocks"] == 1 and totals["rate_limit_hits"] == 0
    assert totals["streams"] == {"started": 1, "completed": 1, "terminated": 0, "disconnected": 0, "failed": 0}
    assert totals["tokens_in"] > 0 and totals["tokens_out"] > 0
    assert 0 < totals["latency_ms"]["p50"] <= totals["latency_ms"]["p95"]
    assert 0 < totals["ttft_ms"]["p50"] <= totals["ttft_ms"]["p95"]
    assert [(m["model"], m["requests"]) for m in body["by_model"]] == [("demo", 3)]
    upstreams = {u["upstream"]: u["requests"] for u in body["by_upstream"]}
    assert upstreams.pop(None) == 1  # the refused one never reached an upstream
    assert list(upstreams.values()) == [2]


async def test_only_monitors_and_above_may_read_it(harness: Harness) -> None:
    user = await _user_key(harness)
    monitor = await _user_key(harness, role="monitor")
    for path in ("/admin/metrics", "/admin/health"):
        denied = await harness.client.get(path, headers=harness.as_key(user))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden", denied.text
        assert (await harness.client.get(path, headers=harness.as_key(monitor))).status_code == 200


async def _samples(harness: Harness) -> list[OpsSample]:
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.scalars(select(OpsSample).order_by(OpsSample.id))).all())


async def test_sampler_stores_statement_counts_and_the_snapshot_reports_their_mean(harness: Harness) -> None:
    sampler = OpsSampler(harness.runtime.db.engine, replica="sampler-test", interval_seconds=0.2)
    await sampler.start()
    try:
        for _ in range(3):
            assert (await harness.client.get("/admin/users")).status_code == 200
        async with asyncio.timeout(10):
            while not [s for s in await _samples(harness) if s.replica == "sampler-test"]:
                await asyncio.sleep(0.05)
    finally:
        await sampler.close()
    # Its own INSERT is not counted: were it, every sample would find one statement to store.
    assert False in [await sampler.sample() for _ in range(5)]

    samples = await _samples(harness)
    ours = [s for s in samples if s.replica == "sampler-test"]
    assert ours and all(s.statements > 0 and s.statement_seconds > 0 for s in ours)
    sql = (await harness.client.get("/admin/metrics")).json()["sql"]
    statements = sum(s.statements for s in samples)
    seconds = sum(s.statement_seconds for s in samples)
    assert sql["statements"] == statements
    assert abs(sql["mean_ms"] - seconds * 1000 / statements) < 1e-6

    # Older samples are outside a one-day window; a window without samples has no mean.
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        await session.execute(update(OpsSample).values(created_at=utcnow() - timedelta(days=2)))
    assert (await harness.client.get("/admin/metrics")).json()["sql"] == {"statements": 0, "mean_ms": None}
    assert (await harness.client.get("/admin/metrics", params={"days": 3})).json()["sql"]["statements"] == statements


async def test_shutdown_stores_a_final_sample(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path)) as running:
        replica = running.runtime.bus.origin
        assert (await running.client.get("/admin/users")).status_code == 200
    engine = create_engine(make_settings(database_url, tmp_path))
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(OpsSample).where(OpsSample.replica == replica))
    finally:
        await engine.dispose()
    assert count == 1


async def test_series_has_every_day_or_hour_with_exact_sums(harness: Harness) -> None:
    rng = random.Random(20261124)
    rows = _rows(rng, 90, age=(0.01, 24 * 6.5))
    await _store(harness, rows)

    def expected(key: str) -> dict[str, dict[str, Any]]:
        sums: dict[str, dict[str, Any]] = {}
        for r in rows:
            label = r["created_at"].astimezone(UTC).strftime(key)
            point = sums.setdefault(label, {"requests": 0, "errors": 0, "tokens_in": 0, "tokens_out": 0, "nanos": 0})
            point["requests"] += 1
            point["errors"] += int(r["status_code"] >= 500 or (r["error_code"] or "").startswith("upstream_"))
            point["tokens_in"] += r["prompt_tokens"]
            point["tokens_out"] += r["completion_tokens"]
            point["nanos"] += r["cost_nanos"] or 0
        return sums

    for bucket, days, key, count in (("day", 7, "%Y-%m-%d", (8,)), ("hour", 7, "%Y-%m-%dT%H", (7 * 24 + 1,))):
        answer = await harness.client.get("/admin/metrics/series", params={"days": days, "bucket": bucket})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["bucket"] == bucket and body["days"] == days
        points = body["points"]
        assert len(points) in count, len(points)
        labels = [p["bucket"] for p in points]
        assert labels == sorted(labels) and len(set(labels)) == len(labels)
        sums = expected(key)
        assert set(sums) <= set(labels)
        for point in points:
            want = sums.get(point["bucket"], {"requests": 0, "errors": 0, "tokens_in": 0, "tokens_out": 0, "nanos": 0})
            assert point["requests"] == want["requests"], point
            assert point["errors"] == want["errors"], point
            assert (point["tokens_in"], point["tokens_out"]) == (want["tokens_in"], want["tokens_out"]), point
            assert point["cost_nanos"] == want["nanos"], point
            assert point["cost"] == json_number(decimal_of_nanos(want["nanos"]))

    default = (await harness.client.get("/admin/metrics/series")).json()
    assert default["days"] == 30 and default["bucket"] == "day" and len(default["points"]) == 31
    assert sum(p["requests"] for p in default["points"]) == len(rows)


async def test_series_refuses_bad_windows(harness: Harness) -> None:
    for params in ({"days": 0}, {"days": 91}, {"bucket": "week"}, {"days": 8, "bucket": "hour"}):
        answer = await harness.client.get("/admin/metrics/series", params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert answer.json()["error"]["param"] in ("days", "bucket"), answer.text
