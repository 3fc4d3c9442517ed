"""Keep-alives while an upstream is silent: SSE comments for OpenAI clients, empty-content chunks for Ollama
clients; both parse cleanly in the official clients and leave the answer unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest
from prometheus_client import REGISTRY

from tests.conftest import Harness, make_settings, running_app
from tests.e2e.conftest import UPSTREAM_KEY, write_config
from tests.support.fake_upstream import FakeUpstream, reply_text, run_fake_upstream
from tests.support.server import ADMIN_KEY

MESSAGES = [{"role": "user", "content": "keep me company"}]


@pytest.fixture
async def pinging(database_url: str, tmp_path: Path, fake_upstream: FakeUpstream) -> AsyncIterator[Harness]:
    # fake-slow waits 0.05 s before each token: a 0.02 s keep-alive interval fires in every gap.
    config = write_config(tmp_path / "gatehouse.yaml", fake_upstream.url)
    settings = make_settings(database_url, tmp_path, gatehouse_config=config, stream_ping_seconds=0.02)
    async with running_app(settings) as harness:
        yield harness


def _pings() -> float:
    return REGISTRY.get_sample_value("sse_pings_total") or 0.0


@pytest.mark.parametrize("alias", ["oa-slow", "ol-slow"])
async def test_openai_clients_get_sse_comments(pinging: Harness, alias: str) -> None:
    before = _pings()
    body = {"model": alias, "messages": MESSAGES, "stream": True}
    raw = (await pinging.client.post("/v1/chat/completions", json=body)).text
    assert ": ping\n\n" in raw
    assert _pings() > before
    # What the openai SDK makes of those bytes: the comments vanish, the answer is whole.
    client = openai.AsyncOpenAI(api_key=ADMIN_KEY, base_url="http://gatehouse.test/v1", http_client=pinging.client)
    stream = await client.chat.completions.create(model=alias, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == reply_text(MESSAGES)


@pytest.mark.parametrize("alias", ["ol-slow", "oa-slow"])
async def test_ollama_clients_get_empty_chunks(pinging: Harness, alias: str) -> None:
    body = {"model": alias, "messages": MESSAGES, "stream": True}
    raw = (await pinging.client.post("/api/chat", json=body)).text
    parts = [json.loads(line) for line in raw.splitlines() if line]
    keepalives = [p for p in parts if p.get("message", {}).get("content") == "" and p.get("done") is False]
    assert keepalives, "silent gaps are filled with empty chunks"
    # Each line is what ollama's client builds a ChatResponse from.
    responses = [ollama.ChatResponse(**part) for part in parts]
    assert responses[-1].done is True
    assert "".join(r.message.content or "" for r in responses) == reply_text(MESSAGES)
    assert all(p.get("model") == alias for p in parts)


async def test_keepalives_while_the_upstream_has_not_answered_yet(database_url: str, tmp_path: Path) -> None:
    # An upstream that takes 0.4 s before its response head (a model loading): the stream starts at once.
    with run_fake_upstream(api_key=UPSTREAM_KEY, latency=0.4) as slow_start:
        config = write_config(tmp_path / "gatehouse.yaml", slow_start.url)
        settings = make_settings(
            database_url, tmp_path, gatehouse_config=config, stream_ping_seconds=0.05, upstream_read_timeout=1.0
        )
        async with running_app(settings) as harness:
            raw = (
                await harness.client.post(
                    "/v1/chat/completions", json={"model": "oa-chat", "messages": MESSAGES, "stream": True}
                )
            ).text
            assert raw.startswith(": ping\n\n")
            assert raw.rstrip().endswith("data: [DONE]")
            ndjson = (
                await harness.client.post("/api/chat", json={"model": "ol-chat", "messages": MESSAGES, "stream": True})
            ).text
            parts = [json.loads(line) for line in ndjson.splitlines() if line]
            assert parts[0]["message"]["content"] == "" and parts[-1]["done"] is True
            assert "".join(p["message"]["content"] for p in parts) == reply_text(MESSAGES)
            # A failure that comes after the keep-alives started arrives as the stream's final error event.
            failed = (
                await harness.client.post(
                    "/v1/chat/completions", json={"model": "oa-hang", "messages": MESSAGES, "stream": True}
                )
            ).text
            assert failed.startswith(": ping") and '"code":"upstream_timeout"' in failed


async def test_terminating_a_stream_still_waiting_for_its_upstream(pinging: Harness) -> None:
    async def stream() -> str:
        body = {"model": "oa-hang", "messages": MESSAGES, "stream": True}
        return (await pinging.client.post("/v1/chat/completions", json=body)).text

    task = asyncio.create_task(stream())
    listed: list[dict[str, Any]] = []
    for _ in range(100):
        listed = (await pinging.client.get("/admin/streams")).json()["items"]
        if listed:
            break
        await asyncio.sleep(0.02)
    assert listed, "the waiting stream is listed"
    await asyncio.sleep(0.1)  # keep-alives flowing
    ended = await pinging.client.post(f"/admin/streams/{listed[0]['id']}/terminate", json={"reason": "stuck"})
    assert ended.status_code == 200, ended.text
    text = await asyncio.wait_for(task, 5)
    assert text.startswith(": ping") and "terminated_by_operator" in text and "stuck" in text
    assert (await pinging.client.get("/admin/streams")).json()["items"] == []
