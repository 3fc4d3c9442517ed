"""Every client surface (OpenAI Responses, Anthropic Messages, legacy completions, Ollama generate) through the
official client packages, against each upstream kind (OpenAI-compatible, Ollama, Anthropic), on SQLite and
PostgreSQL: answers, streams, tool round trips, stored responses, usage as the upstream counted it, and an
operator's termination ending each stream as its protocol does."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.gateway.models import RequestLog
from tests.e2e.conftest import ALL_KINDS
from tests.support.fake_upstream import THINKING_TOKENS, FakeUpstream, reply_text, thinking_tokens
from tests.support.server import GatehouseServer

PREFIXES = list(ALL_KINDS)  # oa: an OpenAI-compatible upstream, ol: Ollama, an: Anthropic
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture(autouse=True)
def no_per_minute_limit(server: GatehouseServer) -> None:
    """This module sends well over a hundred requests a minute; the per-minute limit is tested on its own."""
    with server.client() as admin:
        response = admin.put("/admin/rate-limits", json={"limits": {"user_per_minute": None}})
        assert response.status_code == 200, response.text


def openai_client(server: GatehouseServer, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key or server.admin_key, max_retries=0)


def anthropic_client(server: GatehouseServer, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key or server.admin_key, max_retries=0)


def ollama_client(server: GatehouseServer) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"authorization": f"Bearer {server.admin_key}"})


def expected(text: str) -> str:
    return reply_text([{"role": "user", "content": text}]).strip()


# --- request log -------------------------------------------------------------------------------------


async def _rows(server: GatehouseServer, since: int) -> list[RequestLog]:
    engine = create_async_engine(server.env["DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(RequestLog).where(RequestLog.id > since).order_by(RequestLog.id))
            return list(result.all())  # type: ignore[arg-type]
    finally:
        await engine.dispose()


FLUSH_SECONDS = 0.1  # REQUEST_LOG_FLUSH_SECONDS of the e2e server


def last_id(server: GatehouseServer) -> int:
    """The last request-log row, once the rows of requests already answered are written (they are batched)."""
    time.sleep(FLUSH_SECONDS * 4)
    return max((r.id for r in asyncio.run(_rows(server, 0))), default=0)


def rows_since(server: GatehouseServer, since: int, count: int, timeout: float = 5.0) -> list[Any]:
    """The rows after `since` (gateway requests only: the admin calls of a test are not in the request log)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = asyncio.run(_rows(server, since))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


# --- OpenAI Responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_responses_create_store_retrieve_continue_and_delete(server: GatehouseServer, prefix: str) -> None:
    client = openai_client(server)
    since = last_id(server)
    first = client.responses.create(model=f"{prefix}-chat", input="Tell me a story", instructions="Be brief.")
    assert first.status == "completed" and first.model == f"{prefix}-chat"
    assert first.output_text.strip() == expected("Tell me a story")
    assert first.usage is not None and first.usage.output_tokens == 8 and first.usage.input_tokens > 0
    assert client.responses.retrieve(first.id).output_text == first.output_text
    items = list(client.responses.input_items.list(first.id))
    assert [i.type for i in items] == ["message"]

    second = client.responses.create(model=f"{prefix}-chat", input="And then?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.output_text.strip() == expected("And then?")
    # The continuation carried the first turn: its prompt is longer than the first one's.
    assert second.usage is not None and second.usage.input_tokens > first.usage.input_tokens

    rows = rows_since(server, since, 2)
    assert [(r.surface, r.protocol) for r in rows] == [("responses", "openai")] * 2
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (first.usage.input_tokens, first.usage.output_tokens),
        (second.usage.input_tokens, second.usage.output_tokens),
    ]

    deleted = client.responses.delete(second.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)


def test_responses_not_stored_when_store_is_false(server: GatehouseServer) -> None:
    client = openai_client(server)
    reply = client.responses.create(model="oa-chat", input="hello", store=False)
    assert reply.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_responses_stream(server: GatehouseServer, prefix: str) -> None:
    client = openai_client(server)
    with client.responses.stream(model=f"{prefix}-chat", input="Tell me a story") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    assert final.output_text.strip() == expected("Tell me a story")
    assert final.usage is not None and final.usage.output_tokens == 8
    assert client.responses.retrieve(final.id).output_text == final.output_text


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("stream", [False, True])
def test_responses_function_tool_round_trip(server: GatehouseServer, prefix: str, stream: bool) -> None:
    client = openai_client(server)
    tools: Any = [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": WEATHER}]
    ask: dict[str, Any] = {"model": f"{prefix}-chat", "tools": tools, "input": "What is the weather? Use the tool."}
    if stream:
        with client.responses.stream(**ask) as events:
            for _ in events:
                pass
            first = events.get_final_response()
    else:
        first = client.responses.create(**ask)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    arguments = calls[0].arguments
    assert isinstance(arguments, str) and arguments.startswith("{") and "city" in arguments
    follow = client.responses.create(
        model=f"{prefix}-chat",
        tools=tools,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"}],
    )
    assert follow.status == "completed" and follow.output_text


def test_responses_refuse_hosted_tools_naming_them(server: GatehouseServer) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(server).responses.create(model="ol-chat", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in str(refused.value) and refused.value.status_code == 400


def test_another_user_cannot_read_or_continue_a_stored_response(server: GatehouseServer) -> None:
    mine = openai_client(server).responses.create(model="oa-chat", input="a secret")
    with server.client() as admin:
        user = admin.post("/admin/users", json={"email": f"other-{time.time_ns()}@example.com"}).json()
        key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "theirs"}).json()["key"]
    theirs = openai_client(server, key)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        list(theirs.responses.input_items.list(mine.id))
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(model="oa-chat", input="go on", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(mine.id)
    # Deleting the user removes their stored responses.
    own = theirs.responses.create(model="oa-chat", input="mine").id
    with server.client() as admin:
        assert admin.delete(f"/admin/users/{user['id']}").status_code in (200, 204)
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.admin_key}"}) as admin_http:
        assert admin_http.get(f"/v1/responses/{own}").status_code == 404


# --- Anthropic Messages ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_messages_create_and_count_tokens(server: GatehouseServer, prefix: str) -> None:
    client = anthropic_client(server)
    since = last_id(server)
    reply = client.messages.create(
        model=f"{prefix}-chat", max_tokens=100, messages=[{"role": "user", "content": "Tell me a story"}]
    )
    assert reply.type == "message" and reply.role == "assistant" and reply.model == f"{prefix}-chat"
    assert reply.stop_reason == "end_turn"
    assert reply.content[0].type == "text" and reply.content[0].text.strip() == expected("Tell me a story")
    assert reply.usage.output_tokens == 8 and reply.usage.input_tokens > 0
    (row,) = rows_since(server, since, 1)
    assert (row.surface, row.protocol) == ("messages", "anthropic")
    assert (row.prompt_tokens, row.completion_tokens) == (reply.usage.input_tokens, reply.usage.output_tokens)
    counted = client.messages.count_tokens(
        model=f"{prefix}-chat", messages=[{"role": "user", "content": "Tell me a story"}]
    )
    assert counted.input_tokens == reply.usage.input_tokens


@pytest.mark.parametrize("prefix", PREFIXES)
def test_messages_stream(server: GatehouseServer, prefix: str) -> None:
    client = anthropic_client(server)
    since = last_id(server)
    with client.messages.stream(
        model=f"{prefix}-chat", max_tokens=100, messages=[{"role": "user", "content": "Tell me a story"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "content_block_delta" in kinds
    assert final.content[0].type == "text" and final.content[0].text.strip() == expected("Tell me a story")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 8
    (row,) = rows_since(server, since, 1)
    assert (row.prompt_tokens, row.completion_tokens) == (final.usage.input_tokens, final.usage.output_tokens)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("stream", [False, True])
def test_messages_tool_use_round_trip(server: GatehouseServer, prefix: str, stream: bool) -> None:
    client = anthropic_client(server)
    tools: Any = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "What is the weather? Use the tool."}]
    ask: dict[str, Any] = {"model": f"{prefix}-chat", "max_tokens": 200, "tools": tools, "messages": messages}
    if stream:
        with client.messages.stream(**ask) as events:
            for _ in events:
                pass
            first = events.get_final_message()
    else:
        first = client.messages.create(**ask)
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input
    follow = client.messages.create(
        **{
            **ask,
            "messages": [
                *messages,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}]},
            ],
        }
    )
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"


def test_messages_accept_x_api_key_and_answer_errors_in_anthropic_shape(server: GatehouseServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        body = {"model": "oa-chat", "messages": [{"role": "user", "content": "hi"}]}
        missing = http.post(
            "/v1/messages", json=body, headers={"x-api-key": server.admin_key, "anthropic-version": "2023-06-01"}
        )
        unauthenticated = http.post("/v1/messages", json={**body, "max_tokens": 5})
        ok = http.post("/v1/messages", json={**body, "max_tokens": 5}, headers={"x-api-key": server.admin_key})
    assert missing.status_code == 400
    assert missing.json()["type"] == "error" and missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["type"] == "authentication_error"
    assert ok.status_code == 200 and ok.json()["type"] == "message"
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client(server).messages.create(
            model="ol-chat",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )


# --- legacy completions and Ollama generate ----------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_completions(server: GatehouseServer, prefix: str) -> None:
    client = openai_client(server)
    since = last_id(server)
    whole = client.completions.create(model=f"{prefix}-chat", prompt="Once upon a time", max_tokens=5)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 5
    chunks = list(
        client.completions.create(
            model=f"{prefix}-chat",
            prompt="Once upon a time",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    rows = rows_since(server, since, 2)
    assert [r.surface for r in rows] == ["completions"] * 2
    assert all(r.completion_tokens == 5 for r in rows)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_ollama_generate(server: GatehouseServer, prefix: str) -> None:
    client = ollama_client(server)
    since = last_id(server)
    whole = client.generate(model=f"{prefix}-chat", prompt="Tell me a story", system="Be brief.", stream=False)
    assert whole.done and whole.response.strip() == expected("Tell me a story")
    assert whole.eval_count == 8 and whole.prompt_eval_count
    pieces = list(client.generate(model=f"{prefix}-chat", prompt="Tell me a story", stream=True))
    assert "".join(p.response for p in pieces).strip() == whole.response.strip()
    assert pieces[-1].done and pieces[-1].eval_count == 8
    rows = rows_since(server, since, 2)
    assert [r.surface for r in rows] == ["generate"] * 2
    loaded = client.generate(model=f"{prefix}-chat", prompt="")
    assert loaded.done and loaded.done_reason == "load"


# --- termination ---------------------------------------------------------------------------------------


def _terminate_when_live(server: GatehouseServer, model: str) -> None:
    deadline = time.monotonic() + 5
    with server.client() as admin:
        while time.monotonic() < deadline:
            live = [s for s in admin.get("/admin/streams").json()["items"] if s["model"] == model and s["tokens"]]
            if live:
                response = admin.post(f"/admin/streams/{live[0]['id']}/terminate", json={"reason": "maintenance"})
                assert response.status_code == 200
                return
            time.sleep(0.05)
    raise AssertionError(f"no live stream of {model}")


@pytest.mark.parametrize("prefix", ["oa", "an"])
def test_operator_terminates_a_messages_stream(server: GatehouseServer, prefix: str) -> None:
    model = f"{prefix}-long"
    stopper = threading.Thread(target=_terminate_when_live, args=(server, model))
    stopper.start()
    with (
        pytest.raises(anthropic.APIStatusError) as ended,
        anthropic_client(server).messages.stream(
            model=model, max_tokens=500, messages=[{"role": "user", "content": "Tell me a long story"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    stopper.join()
    assert "maintenance" in str(ended.value)


@pytest.mark.parametrize("prefix", ["oa", "an"])
def test_operator_terminates_a_responses_stream(server: GatehouseServer, prefix: str) -> None:
    model = f"{prefix}-long"
    stopper = threading.Thread(target=_terminate_when_live, args=(server, model))
    stopper.start()
    events = list(openai_client(server).responses.create(model=model, input="Tell me a long story", stream=True))
    stopper.join()
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-2].code == "terminated_by_operator" and "maintenance" in events[-2].message  # type: ignore[union-attr]
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]


def test_dropped_hints_are_named_in_a_header(server: GatehouseServer) -> None:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.admin_key}"}) as http:
        answer = http.post(
            "/v1/responses",
            json={"model": "ol-chat", "input": "hi", "prompt_cache_key": "abc", "include": ["usage"]},
        )
        passthrough = http.post(
            "/v1/messages",
            json={"model": "an-chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            headers={"anthropic-beta": "some-beta"},
        )
    assert answer.status_code == 200
    assert set(answer.headers["x-gatehouse-dropped"].split(", ")) >= {"prompt_cache_key", "include"}
    assert passthrough.status_code == 200 and "x-gatehouse-dropped" not in passthrough.headers


def test_fake_upstream_counted_what_gatehouse_recorded(server: GatehouseServer, fake_upstream: FakeUpstream) -> None:
    """Over a mix of surfaces, the completion tokens recorded equal those the upstream sent."""
    served = fake_upstream.stats()["completion_tokens_served"]
    since = last_id(server)
    openai_client(server).responses.create(model="oa-chat", input="one")
    anthropic_client(server).messages.create(
        model="ol-chat", max_tokens=50, messages=[{"role": "user", "content": "two"}]
    )
    list(ollama_client(server).generate(model="an-chat", prompt="three", stream=True))
    rows = rows_since(server, since, 3)
    assert sum(r.completion_tokens for r in rows) == fake_upstream.stats()["completion_tokens_served"] - served


# --- reasoning -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_reasoning_reaches_every_surface(server: GatehouseServer, prefix: str) -> None:
    thinking = "".join(thinking_tokens("Think first")).strip()
    model = f"{prefix}-think"
    reply = openai_client(server).responses.create(model=model, input="Think first")
    (reasoning,) = [item for item in reply.output if item.type == "reasoning"]
    assert reasoning.content is not None and reasoning.content[0].text.strip() == thinking
    assert reply.output_text.strip() == expected("Think first")
    message = anthropic_client(server).messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Think first"}]
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking.strip() == thinking  # type: ignore[union-attr]
    generated = ollama_client(server).generate(model=model, prompt="Think first", stream=False)
    assert (generated.thinking or "").strip() == thinking
    # Reasoning tokens are completion tokens: counted as the upstream counted them.
    assert message.usage.output_tokens == 8 + THINKING_TOKENS


def test_anthropic_thinking_round_trips_with_its_signature(server: GatehouseServer) -> None:
    """An Anthropic client's thinking block (with its signature) reaches an Anthropic upstream again intact."""
    client = anthropic_client(server)
    tools: Any = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]
    ask: dict[str, Any] = {"model": "an-think", "max_tokens": 200, "tools": tools}
    first = client.messages.create(**ask, messages=[{"role": "user", "content": "Weather? Use the tool."}])
    assert first.content[0].type == "thinking" and first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    follow = client.messages.create(
        **ask,
        messages=[
            {"role": "user", "content": "Weather? Use the tool."},
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}]},
        ],
    )
    assert follow.stop_reason == "end_turn"


# --- Responses passed through to an upstream that serves them ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_responses_pass_through_to_an_upstream_that_serves_them(
    server: GatehouseServer, fake_upstream: FakeUpstream, stream: bool
) -> None:
    client = openai_client(server)
    since = last_id(server)
    fake_upstream.reset()
    if stream:
        with client.responses.stream(model="rp-chat", input="Tell me a story") as events:
            for _ in events:
                pass
            first = events.get_final_response()
    else:
        first = client.responses.create(model="rp-chat", input="Tell me a story")
    assert first.model == "rp-chat" and first.output_text.strip() == expected("Tell me a story")
    second = client.responses.create(model="rp-chat", input="And then?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and client.responses.retrieve(second.id).id == second.id
    sent = [r for r in fake_upstream.requests() if r.get("path") == "/v1/responses"]
    assert len(sent) == 2
    # The upstream got the conversation itself (it stores nothing), never Gatehouse's response ids.
    assert all(r["body"]["store"] is False and "previous_response_id" not in r["body"] for r in sent)
    assert len(sent[1]["body"]["input"]) == 3  # the first question, its answer, the second question
    rows = rows_since(server, since, 2)
    assert [(r.surface, r.upstream) for r in rows] == [("responses", "up-responses")] * 2
    assert rows[0].completion_tokens == 8 and rows[0].prompt_tokens == first.usage.input_tokens  # type: ignore[union-attr]
