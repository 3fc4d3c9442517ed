"""The cost of every request through the gateway, in front of the fake upstream: the price in force when it
started, cached prompt tokens at the cached price, patterns, unpriced models recorded as NULL; and the spend in
/me/usage, /admin/usage, `gatehouse usage show`, /admin/metrics and exports."""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from gatehouse.cli import app as cli
from gatehouse.gateway.models import RequestLog
from gatehouse.settings import get_settings
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import create_member
from tests.support.fake_upstream import DEFAULT_TOKENS, FakeUpstream, prompt_token_count, run_fake_upstream

MESSAGES = [{"role": "user", "content": "what does this cost"}]  # 4 words + 4: 8 prompt tokens at the fake
PROMPT = prompt_token_count(MESSAGES)
CACHED = PROMPT // 2  # fake-cached reports half the prompt as read from its prompt cache
GPT = {"input": 2.5, "output": "10", "cached_input": 1.25}
GPT_MICROS = (2_500_000, 10_000_000, 1_250_000)


def nanos(prompt: int, cached: int, completion: int, micros: tuple[int, int, int]) -> int:
    """A request's cost computed the plain way: uncached and cached prompt tokens, completion, rounded up."""
    given, made, cached_price = micros
    total = (prompt - cached) * given + cached * cached_price + completion * made
    return -(-total // 1000)


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream() as upstream:
        yield upstream


def write_config(path: Path, upstream_url: str) -> Path:
    """Aliases over the fake: `gpt` and `gpt-mini` (fake-chat) and `cached` (fake-cached) through OpenAI's
    protocol, `claude` (fake-cached) through Anthropic's."""
    upstreams = [
        {"name": "up-openai", "kind": "openai", "base_url": upstream_url, "discover": False},
        {"name": "up-anthropic", "kind": "anthropic", "base_url": upstream_url, "discover": False},
    ]
    models = {
        "gpt": {"upstream": "up-openai", "model": "fake-chat"},
        "gpt-mini": {"upstream": "up-openai", "model": "fake-chat"},
        "cached": {"upstream": "up-openai", "model": "fake-cached"},
        "claude": {"upstream": "up-anthropic", "model": "fake-cached"},
    }
    path.write_text(yaml.safe_dump({"upstreams": upstreams, "models": models}))
    return path


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path, fake_upstream: FakeUpstream) -> AsyncIterator[Harness]:
    """The app in front of the fake upstream."""
    config = write_config(tmp_path / "gatehouse.yaml", fake_upstream.url)
    async with running_app(make_settings(database_url, tmp_path, gatehouse_config=config)) as running:
        yield running


async def chat(harness: Harness, model: str, key: str | None = None, **extra: Any) -> Any:
    headers = harness.as_key(key) if key else {}
    response = await harness.client.post(
        "/v1/chat/completions", json={"model": model, "messages": MESSAGES, **extra}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response


async def logged(harness: Harness) -> list[RequestLog]:
    """Every request-log row, in order (after a flush)."""
    await harness.runtime.request_log.flush()
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.execute(select(RequestLog).order_by(RequestLog.id))).scalars())


async def put(harness: Harness, model: str, body: dict[str, Any]) -> Any:
    response = await harness.client.put(f"/admin/prices/{model}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_unpriced_model_records_no_cost(harness: Harness) -> None:
    await chat(harness, "demo")
    (row,) = await logged(harness)
    assert row.cost_nanos is None and row.prompt_tokens > 0
    usage = (await harness.client.get("/me/usage")).json()
    assert usage["spend"] == 0 and usage["spend_nanos"] == 0 and usage["unpriced_requests"] == 1
    assert usage["currency"] == "USD"


async def test_a_price_change_mid_day_leaves_earlier_costs_as_they_were(
    gateway: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    member = await create_member(gateway)
    await put(gateway, "gpt", GPT)
    await chat(gateway, "gpt", member.key)
    await chat(gateway, "gpt", member.key, stream=True)
    await put(gateway, "gpt", {"input": "3", "output": "12.000001"})
    await chat(gateway, "gpt", member.key)
    await chat(gateway, "gpt", member.key, stream=True, stream_options={"include_usage": True})
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    await put(gateway, "gpt", {"input": 1, "output": 1, "effective_from": soon.isoformat()})
    await chat(gateway, "gpt", member.key)  # before the scheduled change: still the second price
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    await chat(gateway, "gpt", member.key)
    await chat(gateway, "gpt-mini", member.key)  # no price: no cost

    rows = await logged(gateway)
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(PROMPT, DEFAULT_TOKENS)] * 7
    first = nanos(PROMPT, 0, DEFAULT_TOKENS, GPT_MICROS)
    second = nanos(PROMPT, 0, DEFAULT_TOKENS, (3_000_000, 12_000_001, 3_000_000))
    third = nanos(PROMPT, 0, DEFAULT_TOKENS, (1_000_000, 1_000_000, 1_000_000))
    assert [r.cost_nanos for r in rows] == [first, first, second, second, second, third, None]
    assert first == 100_000  # 8 prompt tokens at 2.5 and 8 completion tokens at 10 per million: 0.0001 USD
    assert second == 120_001  # 8 x 3 + 8 x 12.000001 per million, rounded up to the next billionth

    spent = first * 2 + second * 3 + third
    mine = (await gateway.client.get("/me/usage", headers=gateway.as_key(member.key))).json()
    assert mine["spend_nanos"] == spent and mine["unpriced_requests"] == 1
    assert mine["spend"] == float(f"{spent}e-9")
    (row,) = (await gateway.client.get("/admin/usage", params={"user_id": member.id})).json()
    assert row["spend_nanos"] == spent and row["currency"] == "USD"
    totals = (await gateway.client.get("/admin/metrics")).json()["totals"]
    assert totals["cost_nanos"] == spent and totals["unpriced_requests"] == 1
    by_model = {m["model"]: m for m in (await gateway.client.get("/admin/metrics")).json()["by_model"]}
    assert by_model["gpt"]["cost_nanos"] == spent and by_model["gpt-mini"]["unpriced_requests"] == 1

    # The same from the shell.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", gateway.settings.database_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        shown = await asyncio.to_thread(CliRunner().invoke, cli, ["usage", "show", "--user", member.email])
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    assert "spend (USD)" in shown.output and f"{Decimal(spent).scaleb(-9).normalize():f}" in shown.output


async def test_cached_prompt_tokens_cost_the_cached_price(gateway: Harness) -> None:
    await put(gateway, "cached", GPT)
    await put(gateway, "claude", GPT)
    await chat(gateway, "cached")  # an OpenAI upstream's prompt_tokens_details.cached_tokens
    await chat(gateway, "cached", stream=True)
    messages = await gateway.client.post(
        "/v1/messages", json={"model": "claude", "messages": MESSAGES, "max_tokens": 100}
    )  # an Anthropic upstream's cache_read_input_tokens, passed through
    assert messages.status_code == 200, messages.text
    streamed = await gateway.client.post(
        "/v1/messages", json={"model": "claude", "messages": MESSAGES, "max_tokens": 100, "stream": True}
    )
    assert streamed.status_code == 200, streamed.text
    await chat(gateway, "claude", stream=True)  # Anthropic's stream translated for an OpenAI client
    await chat(gateway, "claude")  # and its whole answer

    rows = await logged(gateway)
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(PROMPT, DEFAULT_TOKENS)] * 6
    expected = nanos(PROMPT, CACHED, DEFAULT_TOKENS, GPT_MICROS)
    assert CACHED > 0 and expected < nanos(PROMPT, 0, DEFAULT_TOKENS, GPT_MICROS)
    assert [r.cost_nanos for r in rows] == [expected] * 6


async def test_a_pattern_prices_the_models_it_matches(gateway: Harness) -> None:
    await put(gateway, "gpt*", {"input": 1, "output": 2})
    await put(gateway, "gpt-mini", {"input": "0.5", "output": 1})
    await chat(gateway, "gpt")
    await chat(gateway, "gpt-mini")
    assert (await gateway.client.delete("/admin/prices/gpt-mini")).status_code == 200
    await chat(gateway, "gpt-mini")  # its own price removed: the pattern prices it again
    rows = await logged(gateway)
    assert [r.cost_nanos for r in rows] == [
        nanos(PROMPT, 0, DEFAULT_TOKENS, (1_000_000, 2_000_000, 1_000_000)),
        nanos(PROMPT, 0, DEFAULT_TOKENS, (500_000, 1_000_000, 500_000)),
        nanos(PROMPT, 0, DEFAULT_TOKENS, (1_000_000, 2_000_000, 1_000_000)),
    ]


async def test_exports_carry_the_cost(gateway: Harness) -> None:
    await put(gateway, "gpt", GPT)
    await chat(gateway, "gpt")
    await chat(gateway, "gpt-mini")
    await gateway.runtime.request_log.flush()
    cost = nanos(PROMPT, 0, DEFAULT_TOKENS, GPT_MICROS)
    for fmt in ("csv", "jsonl"):
        response = await gateway.client.post("/admin/export", json={"entities": ["requests"], "format": fmt})
        assert response.status_code == 200, response.text
        text = zipfile.ZipFile(io.BytesIO(response.content)).read(f"requests.{fmt}").decode()
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            assert cost == 100_000 and [r["cost"] for r in rows] == ["0.0001", ""]
        else:
            values = [orjson.loads(line)["cost"] for line in text.splitlines()]
            assert values == [float(f"{cost}e-9"), None]
