"""The official openai and ollama packages against a running Gatehouse, across both translations."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import ollama
import openai
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.gateway.models import RequestLog
from tests.e2e.conftest import KINDS
from tests.support.fake_upstream import FakeUpstream, fake_embedding, reply_text
from tests.support.server import GatehouseServer

PREFIXES = list(KINDS)  # "oa": upstream speaks OpenAI, "ol": upstream speaks Ollama
MESSAGES: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story"}]


def openai_client(server: GatehouseServer, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key or server.admin_key, max_retries=0)


def ollama_client(server: GatehouseServer, key: str | None = None) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"authorization": f"Bearer {key or server.admin_key}"})


def expected_reply() -> str:
    return reply_text(MESSAGES)


# --- OpenAI client ------------------------------------------------------------------------------------


def test_openai_lists_models(server: GatehouseServer) -> None:
    ids = {m.id for m in openai_client(server).models.list()}
    assert {"oa-chat", "ol-chat", "oa-embed", "ol-embed"} <= ids


@pytest.mark.parametrize("prefix", PREFIXES)
def test_openai_chat(server: GatehouseServer, prefix: str) -> None:
    reply = openai_client(server).chat.completions.create(model=f"{prefix}-chat", messages=MESSAGES)
    assert reply.choices[0].message.content.strip() == expected_reply().strip()
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens == 8


@pytest.mark.parametrize("prefix", PREFIXES)
def test_openai_chat_stream_with_usage(server: GatehouseServer, prefix: str) -> None:
    stream = openai_client(server).chat.completions.create(
        model=f"{prefix}-chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == expected_reply().strip()
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_openai_stream_without_usage_hides_the_usage_chunk(server: GatehouseServer, prefix: str) -> None:
    stream = openai_client(server).chat.completions.create(model=f"{prefix}-chat", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert all(c.choices for c in chunks), "a usage-only chunk reached a client that did not ask for usage"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == expected_reply().strip()


def test_sse_framing_ends_with_done(server: GatehouseServer) -> None:
    body = {"model": "oa-chat", "messages": MESSAGES, "stream": True}
    with server.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_openai_embeddings(server: GatehouseServer, prefix: str) -> None:
    client = openai_client(server)
    result = client.embeddings.create(model=f"{prefix}-embed", input=["first text", "second text"])
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[0].embedding == pytest.approx(fake_embedding("first text"), rel=1e-6)
    floats = client.embeddings.create(model=f"{prefix}-embed", input="solo", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(fake_embedding("solo"), rel=1e-6)


# --- Ollama client ------------------------------------------------------------------------------------


def test_ollama_lists_models(server: GatehouseServer) -> None:
    names = {m.model for m in ollama_client(server).list().models}
    assert {"oa-chat", "ol-chat"} <= names


@pytest.mark.parametrize("prefix", PREFIXES)
def test_ollama_chat(server: GatehouseServer, prefix: str) -> None:
    reply = ollama_client(server).chat(model=f"{prefix}-chat", messages=MESSAGES, stream=False)
    assert reply.message.content.strip() == expected_reply().strip()
    assert reply.done and reply.eval_count == 8 and (reply.prompt_eval_count or 0) > 0


@pytest.mark.parametrize("prefix", PREFIXES)
def test_ollama_chat_stream(server: GatehouseServer, prefix: str) -> None:
    parts = list(ollama_client(server).chat(model=f"{prefix}-chat", messages=MESSAGES, stream=True))
    assert "".join(p.message.content for p in parts).strip() == expected_reply().strip()
    assert parts[-1].done and parts[-1].eval_count == 8
    assert not any(p.done for p in parts[:-1])


@pytest.mark.parametrize("prefix", PREFIXES)
def test_ollama_num_predict_reaches_upstream(server: GatehouseServer, prefix: str) -> None:
    reply = ollama_client(server).chat(
        model=f"{prefix}-chat", messages=MESSAGES, stream=False, options={"num_predict": 3}
    )
    assert reply.eval_count == 3 and reply.done_reason == "length"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_ollama_embed(server: GatehouseServer, prefix: str) -> None:
    result = ollama_client(server).embed(model=f"{prefix}-embed", input=["first text", "second text"])
    assert len(result.embeddings) == 2
    assert list(result.embeddings[1]) == pytest.approx(fake_embedding("second text"), rel=1e-6)


# --- authentication -----------------------------------------------------------------------------------


def test_wrong_key_is_401_for_both_clients(server: GatehouseServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client(server, "gh_not_a_real_key").models.list()
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client(server, "gh_not_a_real_key").list()
    assert caught.value.status_code == 401


def test_revoked_key_is_refused_at_once(server: GatehouseServer) -> None:
    with server.client() as admin:
        created = admin.post("/me/keys", json={"name": "to-revoke"}).json()
    key = created["key"]
    assert openai_client(server, key).chat.completions.create(model="oa-chat", messages=MESSAGES)  # cached now
    with server.client(key) as client:  # a key cannot revoke itself (409 key_in_use): its owner uses another
        refused = client.delete(f"/me/keys/{created['id']}")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "key_in_use"
    with server.client() as admin:
        assert admin.delete(f"/me/keys/{created['id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai_client(server, key).chat.completions.create(model="oa-chat", messages=MESSAGES)
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client(server, key).chat(model="ol-chat", messages=MESSAGES)
    assert caught.value.status_code == 401


def test_disabled_user_is_refused_at_once(server: GatehouseServer) -> None:
    with server.client() as admin:
        user = admin.post("/admin/users", json={"email": f"dis-{time.time_ns()}@example.com"}).json()
        key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()["key"]
        assert openai_client(server, key).models.list()
        assert admin.post(f"/admin/users/{user['id']}/disable").status_code == 200
    with pytest.raises(openai.PermissionDeniedError) as caught:
        openai_client(server, key).models.list()
    assert caught.value.code == "account_disabled"


# --- upstream failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_upstream_500_is_502_in_each_shape(server: GatehouseServer, prefix: str) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(server).chat.completions.create(model=f"{prefix}-error", messages=MESSAGES)
    assert caught.value.status_code == 502
    with pytest.raises(ollama.ResponseError) as ocaught:
        ollama_client(server).chat(model=f"{prefix}-error", messages=MESSAGES)
    assert ocaught.value.status_code == 502


@pytest.mark.parametrize("prefix", PREFIXES)
def test_upstream_hang_is_504(server: GatehouseServer, prefix: str) -> None:
    with server.client() as client:
        response = client.post("/v1/chat/completions", json={"model": f"{prefix}-hang", "messages": MESSAGES})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_upstream_breaking_mid_stream_ends_with_an_error_event(server: GatehouseServer, prefix: str) -> None:
    stream = openai_client(server).chat.completions.create(model=f"{prefix}-midfail", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        list(stream)
    with pytest.raises(ollama.ResponseError):
        list(ollama_client(server).chat(model=f"{prefix}-midfail", messages=MESSAGES, stream=True))


def test_unknown_model_is_404(server: GatehouseServer) -> None:
    with pytest.raises(openai.NotFoundError):
        openai_client(server).chat.completions.create(model="no-such-model", messages=MESSAGES)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_client_disconnect_cancels_the_upstream_request(
    server: GatehouseServer, fake_upstream: FakeUpstream, prefix: str
) -> None:
    before = fake_upstream.stats()["disconnects"]
    body = {"model": f"{prefix}-long", "messages": MESSAGES, "stream": True}
    with server.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
    # Closing our side must abort Gatehouse's upstream request long before its 200 tokens (2 s) are sent.
    fake_upstream.wait_for_stats(lambda s: s["disconnects"] > before, timeout=1.5)


# --- usage recording ----------------------------------------------------------------------------------


async def _request_rows(server: GatehouseServer, since_id: int = 0) -> list[RequestLog]:
    engine = create_async_engine(server.env["DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(RequestLog).where(RequestLog.id > since_id).order_by(RequestLog.id))
            return list(rows.all())  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def _latest_rows(
    server: GatehouseServer, since_id: int, count: int, models: set[str], timeout: float = 5.0
) -> list[Any]:
    """Rows of `models` written after `since_id` (earlier tests' cancelled streams may still be settling)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in asyncio.run(_request_rows(server, since_id)) if r.model in models]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _max_id(server: GatehouseServer) -> int:
    rows = asyncio.run(_request_rows(server))
    return max((r.id for r in rows), default=0)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_usage_is_recorded_per_request(server: GatehouseServer, prefix: str) -> None:
    start = _max_id(server)
    openai_client(server).chat.completions.create(model=f"{prefix}-chat", messages=MESSAGES)
    list(ollama_client(server).chat(model=f"{prefix}-chat", messages=MESSAGES, stream=True))
    list(openai_client(server).chat.completions.create(model=f"{prefix}-chat", messages=MESSAGES, stream=True))
    rows = _latest_rows(server, start, 3, {f"{prefix}-chat"})
    assert len(rows) == 3
    for row in rows:
        assert row.model == f"{prefix}-chat" and row.upstream == KINDS[prefix]
        assert row.status_code == 200 and row.error_code is None
        assert row.completion_tokens == 8 and row.prompt_tokens > 0 and row.usage_reported
        assert row.user_id is not None and row.key_id is not None and row.latency_ms > 0
    assert [r.stream for r in rows] == [False, True, True]
    assert [r.protocol for r in rows] == ["openai", "ollama", "openai"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_usage_is_estimated_when_the_upstream_reports_none(server: GatehouseServer, prefix: str) -> None:
    start = _max_id(server)
    list(openai_client(server).chat.completions.create(model=f"{prefix}-nousage", messages=MESSAGES, stream=True))
    (row,) = _latest_rows(server, start, 1, {f"{prefix}-nousage"})
    assert not row.usage_reported
    assert row.completion_tokens >= 8 and row.prompt_tokens > 0


def test_failed_and_cancelled_requests_are_recorded(server: GatehouseServer) -> None:
    start = _max_id(server)
    with pytest.raises(openai.InternalServerError):
        openai_client(server).chat.completions.create(model="oa-error", messages=MESSAGES)
    body = {"model": "oa-long", "messages": MESSAGES, "stream": True}
    with server.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        next(response.iter_lines())
    rows = _latest_rows(server, start, 2, {"oa-error", "oa-long"})
    assert [(r.status_code, r.error_code) for r in rows] == [(502, "upstream_error"), (499, "client_disconnected")]


def test_streaming_is_not_buffered(server: GatehouseServer) -> None:
    """The first chunk of a slow stream arrives long before the whole answer is done."""
    body = {"model": "oa-slow", "messages": MESSAGES, "stream": True}
    started = time.perf_counter()
    with (
        httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.admin_key}"}) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        first = next(lines)
        first_at = time.perf_counter() - started
        rest = list(lines)
        total = time.perf_counter() - started
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    assert first.startswith("data: ")
    assert first_at < total / 2
