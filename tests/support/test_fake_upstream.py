"""Checks the fake upstream against the official openai, ollama and anthropic clients (their types) and raw HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import orjson
import pytest

from tests.support.fake_upstream import (
    MODELS,
    THINKING_TOKENS,
    FakeUpstream,
    anthropic_chat_messages,
    choose_tool,
    fake_embedding,
    last_user_text,
    prompt_token_count,
    reply_text,
    reply_tokens,
    responses_chat_messages,
    run_fake_upstream,
    schema_value,
    thinking_signature,
    thinking_tokens,
    tool_call_input,
)
from tests.support.fake_upstream.content import json_pieces

API_KEY = "sk-fake-test"
# typed loosely so the same list satisfies both the openai and ollama client signatures
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway"},
]
PROMPT_TOKENS = prompt_token_count(MESSAGES)  # 3 + 5 words + 2 * 4


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """One fake upstream (no API key) shared by the module."""
    with run_fake_upstream() as up:
        yield up


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    """The shared upstream with counters and request log cleared."""
    upstream.reset()
    return upstream


@pytest.fixture
def oai(upstream: FakeUpstream) -> openai.OpenAI:
    """OpenAI client without retries, so error cases stay fast."""
    return openai.OpenAI(base_url=upstream.url + "/v1", api_key="unused", max_retries=0, timeout=5.0)


@pytest.fixture
def oll(upstream: FakeUpstream) -> ollama.Client:
    """Ollama client pointed at the fake upstream."""
    return ollama.Client(host=upstream.url, timeout=5.0)


def _http(up: FakeUpstream, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=up.url, timeout=timeout, trust_env=False)


def _sse_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def _drain_lines(client: httpx.Client, path: str, body: dict[str, Any], sink: list[str]) -> None:
    """Stream a POST response into `sink` line by line (keeping what arrived before any error)."""
    with client.stream("POST", path, json=body) as r:
        for line in r.iter_lines():
            sink.append(line)


def _drain_openai_stream(stream: Iterable[Any], sink: list[str]) -> None:
    """Collect the content deltas of an openai chat stream into `sink`."""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            sink.append(chunk.choices[0].delta.content)


# ---- OpenAI protocol ---------------------------------------------------------------------------


def test_prompt_token_formula() -> None:
    assert PROMPT_TOKENS == 3 + 5 + 8
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]}]
    assert prompt_token_count(parts) == 2 + 4


def test_openai_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids == list(MODELS)
    assert oai.models.retrieve("fake-chat").owned_by == "fake"


def test_openai_chat_non_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="fake-chat", messages=MESSAGES)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == reply_text(MESSAGES, 8)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (PROMPT_TOKENS, 8)
    assert resp.usage.total_tokens == PROMPT_TOKENS + 8

    capped = oai.chat.completions.create(
        model="fake-chat",
        messages=MESSAGES,
        max_completion_tokens=3,
    )
    assert capped.choices[0].finish_reason == "length"
    assert capped.choices[0].message.content == reply_text(MESSAGES, 3)
    assert capped.usage is not None
    assert capped.usage.completion_tokens == 3


def test_openai_chat_stream_with_usage(up: FakeUpstream, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="fake-chat",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(MESSAGES, 5)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_TOKENS, 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_raw_stream_wire_format(up: FakeUpstream) -> None:
    body = {
        "model": "fake-chat",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with _http(up) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = _sse_events(raw.split("\n"))
    chunks = [orjson.loads(e) for e in events[:-1]]
    # every chunk but the last carries an explicit "usage": null, as OpenAI does
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    expected = reply_tokens(last_user_text(MESSAGES), 8)
    assert [c["choices"][0]["delta"] for c in chunks[1:9]] == [{"content": t} for t in expected]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[9]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}

    # without include_usage there is no usage key at all and no usage chunk
    body.pop("stream_options")
    with _http(up) as client:
        raw = client.post("/v1/chat/completions", json=body).text
    chunks = [orjson.loads(e) for e in _sse_events(raw.split("\n"))[:-1]]
    assert len(chunks) == 1 + 8 + 1
    assert all("usage" not in c for c in chunks)


def test_openai_embeddings(up: FakeUpstream, oai: openai.OpenAI) -> None:
    # The openai client asks for base64 by default and decodes it; floats are requested explicitly.
    for fmt in ("float", None):
        kwargs: dict[str, Any] = {"encoding_format": fmt} if fmt else {}
        resp = oai.embeddings.create(model="fake-embed", input=["hello world", "bye"], **kwargs)
        assert [d.index for d in resp.data] == [0, 1]
        for d, text in zip(resp.data, ["hello world", "bye"], strict=True):
            assert d.embedding == pytest.approx(fake_embedding(text), abs=1e-6)
            assert len(d.embedding) == 8
        assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (3, 3)
    single = oai.embeddings.create(model="fake-embed", input="hello world", encoding_format="float")
    assert single.data[0].embedding == fake_embedding("hello world")
    tokens = oai.embeddings.create(model="fake-embed", input=[[1, 2, 3]], encoding_format="float")
    assert tokens.usage.prompt_tokens == 3
    assert up.stats()["embed_requests"] == 4


def test_openai_unknown_model_and_error(up: FakeUpstream, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oai.chat.completions.create(model="nope", messages=MESSAGES)
    assert nf.value.status_code == 404
    assert nf.value.code == "model_not_found"
    assert "model 'nope' not found" in nf.value.message
    with pytest.raises(openai.InternalServerError) as err:
        oai.chat.completions.create(model="fake-error", messages=MESSAGES, stream=True)
    assert err.value.status_code == 500


# ---- Ollama protocol ---------------------------------------------------------------------------


def test_ollama_list_and_version(up: FakeUpstream, oll: ollama.Client) -> None:
    listed = oll.list()
    assert [m.model for m in listed.models] == list(MODELS)
    first = listed.models[0]
    assert first.details is not None
    assert first.details.family == "fake"
    assert first.digest is not None
    assert len(first.digest) == 64
    with _http(up) as client:
        assert client.get("/api/version").json() == {"version": "0.5.0"}
        assert client.get("/api/tags").json()["models"][0]["name"] == "fake-chat"


def test_ollama_chat_stream_and_non_stream(up: FakeUpstream, oll: ollama.Client) -> None:
    parts = list(oll.chat(model="fake-chat", messages=MESSAGES, stream=True))
    assert [p.done for p in parts] == [False] * 8 + [True]
    assert "".join(p.message.content or "" for p in parts) == reply_text(MESSAGES, 8)
    last = parts[-1]
    assert last.done_reason == "stop"
    assert (last.prompt_eval_count, last.eval_count) == (PROMPT_TOKENS, 8)
    assert last.total_duration is not None
    assert last.total_duration > 0

    whole = oll.chat(model="fake-chat", messages=MESSAGES, stream=False, options={"num_predict": 4})
    assert whole.done
    assert whole.done_reason == "length"
    assert whole.message.content == reply_text(MESSAGES, 4)
    assert (whole.prompt_eval_count, whole.eval_count) == (PROMPT_TOKENS, 4)


def test_ollama_streams_by_default(up: FakeUpstream) -> None:
    with _http(up) as client:
        r = client.post("/api/chat", json={"model": "fake-chat", "messages": MESSAGES})
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 9
    assert lines[-1]["done"] is True
    assert lines[-1]["eval_count"] == 8


def test_ollama_embed(up: FakeUpstream, oll: ollama.Client) -> None:
    resp = oll.embed(model="fake-embed", input=["hello world", "bye"])
    assert [list(e) for e in resp.embeddings] == [fake_embedding("hello world"), fake_embedding("bye")]
    assert resp.prompt_eval_count == 3
    assert oll.embed(model="fake-embed", input="bye").embeddings[0] == fake_embedding("bye")


def test_ollama_unknown_model_and_error(up: FakeUpstream, oll: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as nf:
        oll.chat(model="nope", messages=MESSAGES, stream=False)
    assert nf.value.status_code == 404
    assert nf.value.error == 'model "nope" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as err:
        list(oll.chat(model="fake-error", messages=MESSAGES, stream=True))
    assert err.value.status_code == 500


# ---- Anthropic protocol ------------------------------------------------------------------------

SYSTEM = "You are terse."
# The same conversation as MESSAGES, in Anthropic's shape: the system prompt is a parameter.
CLAUDE_MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the gateway"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
        },
        "required": ["city"],
    },
}
CLOCK: Any = {
    "name": "get_time",
    "description": "Time in a zone.",
    "input_schema": {"type": "object", "properties": {}},
}
TOOLS: list[Any] = [WEATHER, CLOCK]
# Quotes, a backslash and non-ASCII, so pieces of the streamed input cut through escapes and characters.
TOOL_ASK = 'Use a tool: the weather in «Zürich» "today" \\ please'
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


def _claude_client(up: FakeUpstream, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=up.url, api_key=key, max_retries=0, timeout=5.0)


@pytest.fixture
def claude(upstream: FakeUpstream) -> anthropic.Anthropic:
    """Anthropic client without retries, so error cases stay fast."""
    return _claude_client(upstream)


def _sse_pairs(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event in a raw Anthropic stream."""
    pairs = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        pairs.append((lines["event"], orjson.loads(lines["data"])))
    return pairs


def _drain_claude_text(claude: anthropic.Anthropic, model: str, sink: list[str]) -> None:
    """Collect the text deltas of an anthropic message stream into `sink` (keeping those before any error)."""
    with claude.messages.stream(model=model, max_tokens=100, messages=CLAUDE_MESSAGES) as stream:
        for text in stream.text_stream:
            sink.append(text)


def test_anthropic_view_counts_like_openai() -> None:
    # The system prompt counts as one message, so the same conversation costs the same in every protocol.
    assert anthropic_chat_messages(SYSTEM, CLAUDE_MESSAGES) == MESSAGES
    blocks = [{"type": "text", "text": SYSTEM}]
    assert anthropic_chat_messages(blocks, CLAUDE_MESSAGES) == MESSAGES
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "18 C"}]}
    assert anthropic_chat_messages(None, [result]) == [{"role": "user", "content": "18 C"}]


def test_anthropic_create_text(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="fake-chat", max_tokens=100, system=SYSTEM, messages=CLAUDE_MESSAGES)
    assert msg.id.startswith("msg_")
    assert (msg.type, msg.role, msg.model) == ("message", "assistant", "fake-chat")
    assert [b.type for b in msg.content] == ["text"]
    assert isinstance(msg.content[0], anthropic.types.TextBlock)
    assert msg.content[0].text == reply_text(MESSAGES, 8)
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (PROMPT_TOKENS, 8)

    # without the system prompt there is one message and three words less; content blocks count their text
    user_blocks: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "text", "text": "Say hello to the gateway"},
            ],
        }
    ]
    bare = claude.messages.create(model="fake-chat", max_tokens=100, messages=user_blocks)
    assert bare.usage.input_tokens == PROMPT_TOKENS - 3 - 4
    assert bare.content[0].type == "text"
    assert bare.content[0].text == reply_text(MESSAGES, 8)


def test_anthropic_max_tokens_and_stop_sequences(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    capped = claude.messages.create(model="fake-chat", max_tokens=3, system=SYSTEM, messages=CLAUDE_MESSAGES)
    assert capped.stop_reason == "max_tokens"
    assert capped.content[0].type == "text"
    assert capped.content[0].text == reply_text(MESSAGES, 3)
    assert capped.usage.output_tokens == 3

    words = reply_tokens(last_user_text(MESSAGES), 8)
    stop = words[4].strip()  # the reply is cut just before the fifth word
    stopped = claude.messages.create(
        model="fake-chat", max_tokens=100, messages=CLAUDE_MESSAGES, stop_sequences=["never-said", stop]
    )
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == "".join(words[:4])
    assert stopped.usage.output_tokens == 4
    with claude.messages.stream(
        model="fake-chat", max_tokens=100, messages=CLAUDE_MESSAGES, stop_sequences=[stop]
    ) as stream:
        assert "".join(stream.text_stream) == "".join(words[:4])
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)
    # a stop sequence past max_tokens is never reached
    short = claude.messages.create(model="fake-chat", max_tokens=2, messages=CLAUDE_MESSAGES, stop_sequences=[stop])
    assert (short.stop_reason, short.stop_sequence) == ("max_tokens", None)


def test_anthropic_stream_text(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="fake-chat", max_tokens=5, system=SYSTEM, messages=CLAUDE_MESSAGES) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert deltas == list(reply_tokens(last_user_text(MESSAGES), 5))
    assert final.content[0].type == "text"
    assert final.content[0].text == reply_text(MESSAGES, 5)
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, 5)

    events = list(claude.messages.create(model="fake-chat", max_tokens=100, messages=CLAUDE_MESSAGES, stream=True))
    assert [e.type for e in events] == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * 8
        + ["content_block_stop", "message_delta", "message_stop"]
    )


def test_anthropic_raw_stream_wire_format(up: FakeUpstream) -> None:
    body = {"model": "fake-chat", "max_tokens": 100, "system": SYSTEM, "messages": CLAUDE_MESSAGES, "stream": True}
    with _http(up) as client, client.stream("POST", "/v1/messages", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    pairs = _sse_pairs(raw)
    names = [name for name, _ in pairs]
    assert names == (
        ["message_start", "content_block_start", "ping"]
        + ["content_block_delta"] * 8
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert all(data["type"] == name for name, data in pairs)  # each event: line names its data's type
    start = pairs[0][1]["message"]
    assert start["content"] == []
    assert (start["stop_reason"], start["stop_sequence"]) == (None, None)
    assert (start["usage"]["input_tokens"], start["usage"]["output_tokens"]) == (PROMPT_TOKENS, 1)
    assert pairs[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    expected = reply_tokens(last_user_text(MESSAGES), 8)
    assert [data["delta"] for _, data in pairs[3:11]] == [{"type": "text_delta", "text": t} for t in expected]
    assert all(data["index"] == 0 for _, data in pairs[3:12])
    end = pairs[-2][1]
    assert end["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert (end["usage"]["input_tokens"], end["usage"]["output_tokens"]) == (PROMPT_TOKENS, 8)
    assert pairs[-1][1] == {"type": "message_stop"}


def test_anthropic_tool_use_round_trip(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    ask = "What is the weather in Paris? Ask get_weather."
    conversation: list[Any] = [{"role": "user", "content": ask}]
    first = claude.messages.create(model="fake-chat", max_tokens=100, tools=TOOLS, messages=conversation)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    assert first.content[0].type == "text"
    assert first.content[0].text == "".join(reply_tokens(ask, 2))
    call = first.content[1]
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert call.id.startswith("toolu_")
    assert call.name == "get_weather"
    assert call.input == tool_call_input(WEATHER, ask) == {"city": ask, "unit": "celsius", "days": call.input["days"]}
    assert isinstance(call.input["days"], int)

    conversation += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny"}]},
    ]
    second = claude.messages.create(model="fake-chat", max_tokens=100, tools=TOOLS, messages=conversation)
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].type == "text"
    assert second.content[0].text == "".join(reply_tokens("18 C and sunny", 8))
    # three messages: the ask, the 2 words before the call (its input is not counted), the tool result's 4 words
    assert second.usage.input_tokens == len(ask.split()) + 2 + 4 + 3 * 4
    sent = up.requests()[-1]["body"]["messages"]
    assert sent[1]["content"][1]["id"] == sent[2]["content"][0]["tool_use_id"] == call.id

    # a tool_result must answer a tool_use of the message before it, and every tool_use must be answered
    wrong_id = [*conversation[:2], {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}]
    with pytest.raises(anthropic.BadRequestError) as unexpected:
        claude.messages.create(model="fake-chat", max_tokens=100, tools=TOOLS, messages=wrong_id)
    assert "toolu_x" in unexpected.value.message
    unanswered = [*conversation[:2], {"role": "user", "content": "and tomorrow?"}]
    with pytest.raises(anthropic.BadRequestError) as missing:
        claude.messages.create(model="fake-chat", max_tokens=100, tools=TOOLS, messages=unanswered)
    assert call.id in missing.value.message


def test_anthropic_tool_choice(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    def blocks(messages: list[Any], **kwargs: Any) -> list[str]:
        msg = claude.messages.create(model="fake-chat", max_tokens=100, tools=TOOLS, messages=messages, **kwargs)
        return [b.name if isinstance(b, anthropic.types.ToolUseBlock) else b.type for b in msg.content]

    hello: list[Any] = [{"role": "user", "content": "hello"}]
    ask: list[Any] = [{"role": "user", "content": TOOL_ASK}]
    assert blocks(hello) == ["text"]  # auto: only when the user asks for a tool or names one
    assert blocks(ask) == ["text", "get_weather"]  # "tool" asked for: the first tool
    assert blocks([{"role": "user", "content": "what does get_time say"}]) == ["text", "get_time"]
    assert blocks(hello, tool_choice={"type": "any"}) == ["text", "get_weather"]
    assert blocks(hello, tool_choice={"type": "tool", "name": "get_time"}) == ["text", "get_time"]
    assert blocks(ask, tool_choice={"type": "none"}) == ["text"]
    # a call that does not fit in max_tokens is not made
    short = claude.messages.create(model="fake-chat", max_tokens=4, tools=TOOLS, messages=ask)
    assert (short.stop_reason, [b.type for b in short.content], short.usage.output_tokens) == (
        "max_tokens",
        ["text"],
        4,
    )
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model="fake-chat", max_tokens=100, tools=TOOLS, messages=hello, tool_choice={"type": "tool", "name": "x"}
        )


def test_anthropic_streamed_tool_input_arrives_intact(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    expected = tool_call_input(WEATHER, TOOL_ASK)
    assert expected["city"] == TOOL_ASK
    pieces: list[str] = []
    indexes: set[int] = set()
    with claude.messages.stream(
        model="fake-chat", max_tokens=100, tools=[WEATHER], messages=[{"role": "user", "content": TOOL_ASK}]
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                pieces.append(event.delta.partial_json)
                indexes.add(event.index)
        final = stream.get_final_message()
    assert indexes == {1}  # the text block is index 0, the tool_use block index 1
    assert pieces[0] == ""  # opened with an empty delta, as Anthropic does
    assert len(pieces) > 5
    assert any(p.count('"') % 2 for p in pieces)  # at least one cut falls inside a string
    assert json.loads("".join(pieces)) == expected
    assert "".join(pieces) == json.dumps(expected, ensure_ascii=False)
    call = final.content[1]
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert (call.name, call.input) == ("get_weather", expected)
    assert final.stop_reason == "tool_use"
    # each word and each non-empty piece is one output token, and the ledger says so too
    assert final.usage.output_tokens == 2 + len(pieces) - 1
    assert up.stats()["completion_tokens_served"] == final.usage.output_tokens


def test_anthropic_count_tokens(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="fake-chat", system=SYSTEM, messages=CLAUDE_MESSAGES)
    assert counted.input_tokens == PROMPT_TOKENS
    with_tools = claude.messages.count_tokens(model="fake-chat", system=SYSTEM, messages=CLAUDE_MESSAGES, tools=TOOLS)
    assert with_tools.input_tokens == PROMPT_TOKENS  # tools are not counted, as for the other protocols
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="nope", messages=CLAUDE_MESSAGES)
    stats = up.stats()
    assert (stats["requests"], stats["chat_requests"], stats["prompt_tokens"]) == (3, 0, 0)  # counting is not a chat


def test_anthropic_errors(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        claude.messages.create(model="nope", max_tokens=10, messages=CLAUDE_MESSAGES)
    assert nf.value.body == {"type": "error", "error": {"type": "not_found_error", "message": "model: nope"}}
    for stream in (False, True):
        with pytest.raises(anthropic.InternalServerError) as err:
            claude.messages.create(model="fake-error", max_tokens=10, messages=CLAUDE_MESSAGES, stream=stream)
        assert err.value.status_code == 500
        assert isinstance(err.value.body, dict)
        assert err.value.body["error"]["type"] == "api_error"
    with _http(up) as client:
        no_max = client.post("/v1/messages", json={"model": "fake-chat", "messages": CLAUDE_MESSAGES})
        assert no_max.status_code == 400
        assert no_max.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        }
        bad_image = {
            "model": "fake-chat",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}],
        }
        assert client.post("/v1/messages", json=bad_image).status_code == 400
        unknown = client.get("/v1/nothing", headers={"anthropic-version": "2023-06-01"})
        assert (unknown.status_code, unknown.json()["error"]["type"]) == (404, "not_found_error")
    up.fail("overloaded")
    try:
        with pytest.raises(anthropic.OverloadedError) as busy:
            claude.messages.create(model="fake-chat", max_tokens=10, messages=CLAUDE_MESSAGES)
        assert busy.value.status_code == 529
        with pytest.raises(anthropic.InternalServerError):
            claude.models.list()
        up.fail("error")
        with pytest.raises(anthropic.InternalServerError) as failing:
            claude.messages.create(model="fake-chat", max_tokens=10, messages=CLAUDE_MESSAGES)
        assert isinstance(failing.value.body, dict)
        assert failing.value.body["error"]["type"] == "api_error"
    finally:
        up.fail("ok")


def test_anthropic_models_list(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    listed = list(claude.models.list())
    assert [m.id for m in listed] == list(MODELS)
    assert (listed[0].type, listed[0].display_name) == ("model", "Fake Chat")
    assert listed[0].created_at.year == 2023
    # pages follow last_id until has_more is false
    assert [m.id for m in claude.models.list(limit=2)] == list(MODELS)
    assert claude.models.retrieve("fake-long").display_name == "Fake Long"
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("nope")
    with _http(up) as client:
        page = client.get("/v1/models", params={"limit": 2}, headers={"x-api-key": "k"}).json()
        assert page == {
            "data": page["data"],
            "has_more": True,
            "first_id": "fake-chat",
            "last_id": "fake-embed",
        }
        before = client.get("/v1/models", params={"before_id": "fake-slow"}, headers={"x-api-key": "k"}).json()
        assert [m["id"] for m in before["data"]] == ["fake-chat", "fake-embed"]
        assert before["has_more"] is False
        # without Anthropic's headers the list keeps OpenAI's shape
        plain = client.get("/v1/models").json()
        assert plain["object"] == "list"
        assert plain["data"][0]["object"] == "model"


def test_anthropic_api_key() -> None:
    with run_fake_upstream(api_key=API_KEY, tokens=4) as up:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            _claude_client(up, "wrong").messages.create(model="fake-chat", max_tokens=10, messages=CLAUDE_MESSAGES)
        assert isinstance(denied.value.body, dict)
        assert denied.value.body["error"]["type"] == "authentication_error"
        with pytest.raises(anthropic.AuthenticationError):
            _claude_client(up, "wrong").models.list()
        good = _claude_client(up, API_KEY).messages.create(model="fake-chat", max_tokens=10, messages=CLAUDE_MESSAGES)
        assert good.usage.output_tokens == 4
        # x-api-key, as Anthropic's API and older SDKs send it, works too and is never logged
        with _http(up) as client:
            body = {"model": "fake-chat", "max_tokens": 10, "messages": CLAUDE_MESSAGES}
            r = client.post(
                "/v1/messages", json=body, headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
            )
            assert r.status_code == 200, r.text
            headers = up.requests()[-1]["headers"]
        assert "x-api-key" not in headers
        assert "authorization" not in headers
        assert headers["anthropic-version"] == "2023-06-01"


def test_anthropic_midfail_and_nousage(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIConnectionError):
        _drain_claude_text(claude, "fake-midfail", received)
    assert "".join(received) == reply_text(MESSAGES, 3)
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(model="fake-midfail", max_tokens=100, messages=CLAUDE_MESSAGES)
    stats = up.stats()
    assert (stats["aborted"], stats["completion_tokens_served"]) == (2, 3)

    body = {"model": "fake-nousage", "max_tokens": 100, "messages": CLAUDE_MESSAGES}
    with _http(up) as client:
        whole = client.post("/v1/messages", json=body).json()
        assert "usage" not in whole
        assert whole["content"][0]["text"] == reply_text(MESSAGES, 8)
        pairs = _sse_pairs(client.post("/v1/messages", json={**body, "stream": True}).text)
    assert "usage" not in pairs[0][1]["message"]
    assert "usage" not in pairs[-2][1]
    assert pairs[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_anthropic_disconnect_and_pacing(up: FakeUpstream) -> None:
    body = {"model": "fake-long", "max_tokens": 1000, "messages": CLAUDE_MESSAGES, "stream": True}
    with _http(up) as client, client.stream("POST", "/v1/messages", json=body) as r:
        seen = 0
        for line in r.iter_lines():
            if line == "event: content_block_delta":
                seen += 1
            if seen == 5:
                break  # leaving the block closes the connection mid-stream
    stats = up.wait_for_stats(lambda s: s["disconnects"] == 1 and s["in_flight"] == 0)
    assert 4 <= stats["completion_tokens_served"] < 200

    slow = {"model": "fake-slow", "max_tokens": 3, "messages": CLAUDE_MESSAGES}
    started = time.perf_counter()
    with _http(up) as client:
        client.post("/v1/messages", json=slow).raise_for_status()
    assert time.perf_counter() - started >= 0.14


def test_anthropic_ledger_counts_like_the_others(
    up: FakeUpstream, claude: anthropic.Anthropic, oai: openai.OpenAI, oll: ollama.Client
) -> None:
    claude.messages.create(model="fake-chat", max_tokens=100, system=SYSTEM, messages=CLAUDE_MESSAGES)
    with claude.messages.stream(model="fake-chat", max_tokens=5, system=SYSTEM, messages=CLAUDE_MESSAGES) as s:
        s.until_done()
    oai.chat.completions.create(model="fake-chat", messages=MESSAGES, max_tokens=2)
    list(oll.chat(model="fake-chat", messages=MESSAGES, stream=True, options={"num_predict": 1}))
    stats = up.stats()
    assert stats["completion_tokens_served"] == 8 + 5 + 2 + 1
    assert stats["prompt_tokens"] == 4 * PROMPT_TOKENS
    assert stats["requests"] == stats["chat_requests"] == 4
    assert (stats["disconnects"], stats["in_flight"]) == (0, 0)
    logged = up.requests()
    assert [r["path"] for r in logged] == ["/v1/messages", "/v1/messages", "/v1/chat/completions", "/api/chat"]
    assert logged[1]["body"]["stream"] is True
    assert logged[0]["headers"]["anthropic-version"]


# ---- tool calls and reasoning: the shared rule, per protocol ------------------------------------

# WEATHER and CLOCK in OpenAI chat's (and Ollama's) shape, and in the Responses API's.
OAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
    }
    for t in TOOLS
]
RESP_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": t["name"],
        "description": t["description"],
        "parameters": t["input_schema"],
        "strict": False,
    }
    for t in TOOLS
]
ASK = "What is the weather in Paris? Ask get_weather."
THINK = MODELS["fake-think"].thinking


def _pieces(tool: Any, text: str) -> tuple[str, ...]:
    """The argument pieces the fake streams for a call of `tool` after `text`, one token each."""
    return json_pieces(json.dumps(tool_call_input(tool, text), ensure_ascii=False))


def test_tool_rule_and_shapes() -> None:
    assert THINK == THINKING_TOKENS == 6
    # the same tool in every protocol's shape gets the same input
    for shaped in (WEATHER, OAI_TOOLS[0], RESP_TOOLS[0]):
        assert tool_call_input(shaped, "x") == tool_call_input(WEATHER, "x")
    for tools in (TOOLS, OAI_TOOLS, RESP_TOOLS):
        assert choose_tool(tools, "the time please") is None
        assert choose_tool(tools, "call get_time now") is tools[1]
        assert choose_tool(tools, "use a tool") is tools[0]
        assert choose_tool(tools, "the time please", required=True) is tools[0]
        assert choose_tool(tools, "tool: get_weather", name="get_time") is tools[1]
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "ok": {"type": "boolean"}}}
    assert schema_value(schema, "Oslo") == {"city": "Oslo", "ok": True}
    assert thinking_tokens("hi") == reply_tokens("thinking about: hi", THINK)
    assert thinking_signature("a b ") == thinking_signature("a b ") != thinking_signature("a c ")


# ---- OpenAI chat: tool calls, reasoning, stop ---------------------------------------------------


def test_openai_chat_tool_call_round_trip(up: FakeUpstream, oai: openai.OpenAI) -> None:
    conversation: list[Any] = [{"role": "user", "content": ASK}]
    first = oai.chat.completions.create(model="fake-chat", messages=conversation, tools=OAI_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert isinstance(call, openai.types.chat.ChatCompletionMessageFunctionToolCall)
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == tool_call_input(WEATHER, ASK)
    assert first.usage is not None
    assert first.usage.completion_tokens == len(_pieces(WEATHER, ASK))
    assert first.usage.prompt_tokens == prompt_token_count(conversation)

    conversation += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
    ]
    second = oai.chat.completions.create(model="fake-chat", messages=conversation, tools=OAI_TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == reply_text(conversation, 8)
    assert second.usage is not None
    assert second.usage.prompt_tokens == prompt_token_count(conversation)  # the tool result counts, the call 4
    logged = up.requests()[-1]["body"]
    assert logged["messages"][1]["tool_calls"][0]["id"] == call.id


def test_openai_chat_tool_choice(up: FakeUpstream, oai: openai.OpenAI) -> None:
    def called(ask: str, **kwargs: Any) -> str | None:
        resp = oai.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": ask}], **{"tools": OAI_TOOLS, **kwargs}
        )
        calls = resp.choices[0].message.tool_calls
        assert (resp.choices[0].finish_reason == "tool_calls") == bool(calls)
        return calls[0].function.name if calls else None

    assert called("Say hello") is None
    assert called("Say hello with a tool") == "get_weather"
    assert called("Say hello, get_time") == "get_time"
    assert called("Say hello, get_time", tool_choice="none") is None
    assert called("Say hello", tool_choice="required") == "get_weather"
    assert called("Say hello", tool_choice="auto") is None
    assert called("Say hello", tool_choice={"type": "function", "function": {"name": "get_time"}}) == "get_time"
    only_clock = {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}
    assert called("Say hello", tool_choice={"type": "allowed_tools", "allowed_tools": only_clock}) == "get_time"
    # a last message that is not a user turn is answered with text
    after_tool: list[Any] = [
        {"role": "user", "content": "Say hello with a tool"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]
    answer = oai.chat.completions.create(
        model="fake-chat", messages=after_tool, tools=OAI_TOOLS, tool_choice="required"
    )
    assert answer.choices[0].finish_reason == "stop"

    with pytest.raises(openai.BadRequestError) as no_tools:
        oai.chat.completions.create(model="fake-chat", messages=MESSAGES, tool_choice="required")
    assert no_tools.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as unknown:
        oai.chat.completions.create(
            model="fake-chat",
            messages=MESSAGES,
            tools=OAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert unknown.value.param == "tool_choice"


def test_openai_chat_tool_call_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    def stream() -> list[Any]:
        return list(
            oai.chat.completions.create(
                model="fake-chat",
                messages=[{"role": "user", "content": TOOL_ASK}],
                tools=OAI_TOOLS,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    chunks = stream()
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", None)
    assert first.tool_calls is not None
    head = first.tool_calls[0]
    assert (head.index, head.type) == (0, "function")
    assert head.id is not None
    assert head.id.startswith("call_")
    assert head.function is not None
    assert (head.function.name, head.function.arguments) == ("get_weather", "")
    deltas = [c.choices[0].delta for c in chunks[1:-2]]
    pieces = [d.tool_calls[0].function.arguments for d in deltas if d.tool_calls and d.tool_calls[0].function]
    assert len(pieces) == len(deltas)  # every delta after the first is one piece of the arguments
    assert all(d.tool_calls and d.tool_calls[0].index == 0 and d.tool_calls[0].id is None for d in deltas)
    assert tuple(pieces) == _pieces(WEATHER, TOOL_ASK)
    assert all(1 <= len(p) <= 8 for p in pieces)
    assert json.loads("".join(pieces)) == tool_call_input(WEATHER, TOOL_ASK)
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == len(pieces)
    assert [c.choices[0].delta.tool_calls for c in stream()[1:-2]] == [d.tool_calls for d in deltas]  # deterministic
    assert up.stats()["completion_tokens_served"] == 2 * len(pieces)

    # the SDK's stream helper puts the call back together
    with oai.chat.completions.stream(
        model="fake-chat", messages=[{"role": "user", "content": TOOL_ASK}], tools=OAI_TOOLS
    ) as helper:
        final = helper.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.arguments == "".join(pieces)


def test_openai_chat_tool_call_that_does_not_fit(up: FakeUpstream, oai: openai.OpenAI) -> None:
    needed = len(_pieces(WEATHER, ASK))
    ask: list[Any] = [{"role": "user", "content": ASK}]
    cut = oai.chat.completions.create(model="fake-chat", messages=ask, tools=OAI_TOOLS, max_tokens=needed - 1)
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.tool_calls is None
    assert cut.choices[0].message.content == "".join(reply_tokens(ASK, needed - 1))
    fits = oai.chat.completions.create(model="fake-chat", messages=ask, tools=OAI_TOOLS, max_completion_tokens=needed)
    assert fits.choices[0].finish_reason == "tool_calls"


def test_openai_chat_stop(up: FakeUpstream, oai: openai.OpenAI) -> None:
    words = reply_tokens(last_user_text(MESSAGES), 8)
    stop = words[3].strip()
    resp = oai.chat.completions.create(model="fake-chat", messages=MESSAGES, stop=["never", stop])
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == "".join(words[:3])
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 3
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="fake-chat", messages=MESSAGES, stop=["a", "b", "c", "d", "e"])


def test_openai_chat_reasoning(up: FakeUpstream, oai: openai.OpenAI) -> None:
    thinking = "".join(thinking_tokens(last_user_text(MESSAGES)))
    resp = oai.chat.completions.create(model="fake-think", messages=MESSAGES)
    message = resp.choices[0].message
    assert message.model_extra is not None
    assert message.model_extra["reasoning_content"] == thinking
    assert message.content == reply_text(MESSAGES, 8)
    assert resp.usage is not None
    assert resp.usage.completion_tokens == THINK + 8
    assert resp.usage.completion_tokens_details is not None
    assert resp.usage.completion_tokens_details.reasoning_tokens == THINK

    chunks = list(oai.chat.completions.create(model="fake-think", messages=MESSAGES, stream=True, max_tokens=THINK + 2))
    extras = [c.choices[0].delta.model_extra or {} for c in chunks]
    assert "".join(e.get("reasoning_content", "") for e in extras) == thinking
    assert [i for i, e in enumerate(extras) if "reasoning_content" in e] == list(range(1, 1 + THINK))  # first
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply_text(MESSAGES, 2)
    assert chunks[-1].choices[0].finish_reason == "length"

    # the cap cuts the reasoning too; reasoning_effort "none" turns it off
    short = oai.chat.completions.create(model="fake-think", messages=MESSAGES, max_tokens=4)
    assert short.choices[0].message.model_extra is not None
    assert short.choices[0].message.model_extra["reasoning_content"] == "".join(
        thinking_tokens(last_user_text(MESSAGES), 4)
    )
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("", "length")
    off = oai.chat.completions.create(model="fake-think", messages=MESSAGES, reasoning_effort="none")
    assert "reasoning_content" not in (off.choices[0].message.model_extra or {})
    assert off.usage is not None
    assert off.usage.completion_tokens == 8
    plain = oai.chat.completions.create(model="fake-chat", messages=MESSAGES)
    assert "reasoning_content" not in (plain.choices[0].message.model_extra or {})

    # reasoning, then the call: the call's first delta comes after the reasoning
    think_call = list(
        oai.chat.completions.create(
            model="fake-think", messages=[{"role": "user", "content": ASK}], tools=OAI_TOOLS, stream=True
        )
    )
    assert think_call[0].choices[0].delta.content == ""
    opened = think_call[1 + THINK].choices[0].delta.tool_calls
    assert opened is not None
    assert opened[0].id is not None
    assert think_call[-1].choices[0].finish_reason == "tool_calls"


# ---- OpenAI legacy completions ------------------------------------------------------------------

PROMPT = "Once upon a time"


def test_openai_completions(up: FakeUpstream, oai: openai.OpenAI) -> None:
    resp = oai.completions.create(model="fake-chat", prompt=PROMPT)
    assert isinstance(resp, openai.types.Completion)
    assert resp.id.startswith("cmpl-")
    assert (resp.object, resp.model) == ("text_completion", "fake-chat")
    (choice,) = resp.choices
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "stop", None)
    assert choice.text == "".join(reply_tokens(PROMPT, 8))
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 8, 12)

    # max_tokens is 16 unless given, as OpenAI's
    long = oai.completions.create(model="fake-long", prompt=PROMPT)
    assert (long.choices[0].text, long.choices[0].finish_reason) == ("".join(reply_tokens(PROMPT, 16)), "length")
    capped = oai.completions.create(model="fake-long", prompt=PROMPT, max_tokens=3)
    assert capped.usage is not None
    assert capped.usage.completion_tokens == 3

    words = reply_tokens(PROMPT, 8)
    stopped = oai.completions.create(model="fake-chat", prompt=PROMPT, stop=words[2].strip())
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("".join(words[:2]), "stop")
    echoed = oai.completions.create(model="fake-chat", prompt=PROMPT, echo=True, max_tokens=2)
    assert echoed.choices[0].text == PROMPT + "".join(words[:2])
    assert echoed.usage is not None
    assert echoed.usage.completion_tokens == 2

    # a list of prompts: the first is answered; token arrays count their tokens
    listed = oai.completions.create(model="fake-chat", prompt=[PROMPT, "ignored"])
    assert listed.choices[0].text == choice.text
    tokens = oai.completions.create(model="fake-chat", prompt=[1, 2, 3])
    assert tokens.usage is not None
    assert tokens.usage.prompt_tokens == 3
    with pytest.raises(openai.BadRequestError) as many:
        oai.completions.create(model="fake-chat", prompt=PROMPT, n=2)
    assert many.value.param == "n"
    assert [r["path"] for r in up.requests()][-1] == "/v1/completions"


def test_openai_completions_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    chunks = list(
        oai.completions.create(
            model="fake-chat", prompt=PROMPT, stream=True, stream_options={"include_usage": True}, echo=True
        )
    )
    assert all(isinstance(c, openai.types.Completion) and c.object == "text_completion" for c in chunks)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert texts == [PROMPT, *reply_tokens(PROMPT, 8), ""]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 8)
    assert len({c.id for c in chunks}) == 1

    with _http(up) as client:
        raw = client.post("/v1/completions", json={"model": "fake-long", "prompt": PROMPT, "stream": True}).text
    assert raw.endswith("data: [DONE]\n\n")
    plain = [orjson.loads(e) for e in _sse_events(raw.split("\n"))[:-1]]
    assert len(plain) == 16 + 1
    assert all("usage" not in c for c in plain)
    assert plain[-1]["choices"][0] == {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}
    assert up.stats()["completion_tokens_served"] == 8 + 16


# ---- OpenAI Responses API -----------------------------------------------------------------------


def test_responses_text(up: FakeUpstream, oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="fake-chat", instructions=SYSTEM, input="Say hello to the gateway")
    assert isinstance(resp, openai.types.responses.Response)
    assert resp.id.startswith("resp_")
    assert (resp.object, resp.status, resp.model, resp.incomplete_details) == (
        "response",
        "completed",
        "fake-chat",
        None,
    )
    (item,) = resp.output
    assert isinstance(item, openai.types.responses.ResponseOutputMessage)
    assert item.id.startswith("msg_")
    assert (item.role, item.status) == ("assistant", "completed")
    (part,) = item.content
    assert isinstance(part, openai.types.responses.ResponseOutputText)
    assert part.annotations == []
    assert resp.output_text == reply_text(MESSAGES, 8)
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (
        PROMPT_TOKENS,
        8,
        PROMPT_TOKENS + 8,
    )
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    assert resp.model_extra is not None
    assert resp.model_extra["store"] is True  # the API returns it; the SDK's Response type has no field for it

    # items count as the chat they describe: the same conversation costs the same as in chat completions
    items: list[Any] = [
        {"role": "developer", "content": [{"type": "input_text", "text": SYSTEM}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello to the gateway"}]},
    ]
    assert responses_chat_messages(None, items) == [{"role": "developer", "content": SYSTEM}, MESSAGES[1]]
    again = oai.responses.create(model="fake-chat", input=items, store=False)
    assert again.output_text == resp.output_text
    assert again.usage is not None
    assert again.usage.input_tokens == PROMPT_TOKENS
    assert again.model_extra is not None
    assert again.model_extra["store"] is False

    capped = oai.responses.create(model="fake-chat", input="Say hello to the gateway", max_output_tokens=3)
    assert (capped.status, capped.max_output_tokens) == ("incomplete", 3)
    assert capped.incomplete_details is not None
    assert capped.incomplete_details.reason == "max_output_tokens"
    assert capped.output_text == reply_text(MESSAGES, 3)
    assert capped.output[0].type == "message"
    assert capped.output[0].status == "incomplete"
    assert up.stats()["completion_tokens_served"] == 8 + 8 + 3


def test_responses_tool_call_round_trip(up: FakeUpstream, oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="fake-chat", input=ASK, tools=RESP_TOOLS)
    (call,) = first.output
    assert isinstance(call, openai.types.responses.ResponseFunctionToolCall)
    assert call.id is not None
    assert call.id.startswith("fc_")
    assert call.call_id.startswith("call_")
    assert (call.name, call.status) == ("get_weather", "completed")
    assert json.loads(call.arguments) == tool_call_input(WEATHER, ASK)
    assert first.status == "completed"
    assert first.usage is not None
    assert first.usage.output_tokens == len(_pieces(WEATHER, ASK))
    assert first.tools[0].type == "function"

    items: list[Any] = [
        {"role": "user", "content": ASK},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"},
    ]
    second = oai.responses.create(model="fake-chat", input=items, tools=RESP_TOOLS)
    assert [o.type for o in second.output] == ["message"]
    assert second.output_text == "".join(reply_tokens(ASK, 8))
    assert second.usage is not None
    assert second.usage.input_tokens == prompt_token_count(responses_chat_messages(None, items))

    def called(ask: str, **kwargs: Any) -> str | None:
        resp = oai.responses.create(model="fake-chat", input=ask, **{"tools": RESP_TOOLS, **kwargs})
        return next((o.name for o in resp.output if o.type == "function_call"), None)

    assert called("Say hello") is None
    assert called("Say hello, get_time") == "get_time"
    assert called("Say hello with tools", tool_choice="none") is None
    assert called("Say hello", tool_choice="required") == "get_weather"
    assert called("Say hello", tool_choice={"type": "function", "name": "get_time"}) == "get_time"
    allowed = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}
    assert called("Say hello", tool_choice=allowed) == "get_time"
    needed = len(_pieces(WEATHER, "Say hello"))
    short = oai.responses.create(
        model="fake-chat", input="Say hello", tools=RESP_TOOLS, tool_choice="required", max_output_tokens=needed - 1
    )
    assert (short.status, [o.type for o in short.output]) == ("incomplete", ["message"])

    with pytest.raises(openai.BadRequestError) as orphan:
        oai.responses.create(
            model="fake-chat", input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]
        )
    assert "call_nope" in orphan.value.message
    with pytest.raises(openai.BadRequestError) as no_tools:
        oai.responses.create(model="fake-chat", input="hi", tool_choice="required")
    assert no_tools.value.param == "tool_choice"


def test_responses_previous_response_id_is_unknown(up: FakeUpstream, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        oai.responses.create(model="fake-chat", input="hi", previous_response_id="resp_abc")
    assert unknown.value.status_code == 400
    assert (unknown.value.code, unknown.value.param) == ("previous_response_not_found", "previous_response_id")
    assert unknown.value.body == {
        "message": "Previous response with id 'resp_abc' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    assert up.requests()[-1]["body"]["previous_response_id"] == "resp_abc"  # logged, so a test can see it was sent
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="nope", input="hi")


def test_responses_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="fake-chat", instructions=SYSTEM, input="Say hello to the gateway") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 8,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created = events[0]
    assert isinstance(created, openai.types.responses.ResponseCreatedEvent)
    assert (created.response.status, created.response.output, created.response.usage) == ("in_progress", [], None)
    deltas = [e.delta for e in events if isinstance(e, openai.types.responses.ResponseTextDeltaEvent)]
    assert deltas == list(reply_tokens(last_user_text(MESSAGES), 8))
    done = events[-1]
    assert isinstance(done, openai.types.responses.ResponseCompletedEvent)
    assert done.response.usage is not None
    assert (done.response.usage.input_tokens, done.response.usage.output_tokens) == (PROMPT_TOKENS, 8)
    assert final.output_text == reply_text(MESSAGES, 8)
    assert final.id == created.response.id

    with oai.responses.stream(model="fake-chat", input=TOOL_ASK, tools=RESP_TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert tuple(pieces) == _pieces(WEATHER, TOOL_ASK)
    args_done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert args_done.arguments == "".join(pieces)
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call"
    assert (added.item.arguments, added.item.status) == ("", "in_progress")
    assert final.output[0].type == "function_call"
    assert final.output[0].arguments == "".join(pieces)

    with oai.responses.stream(model="fake-long", input="hi", max_output_tokens=5) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None
    assert up.stats()["completion_tokens_served"] == 8 + len(pieces) + 5


def test_responses_raw_stream_wire_format(up: FakeUpstream) -> None:
    body = {"model": "fake-chat", "input": "Say hello to the gateway", "stream": True, "max_output_tokens": 2}
    with _http(up) as client, client.stream("POST", "/v1/responses", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    pairs = _sse_pairs(raw)
    assert all(data["type"] == name for name, data in pairs)  # each event: line names its data's type
    assert [data["sequence_number"] for _, data in pairs] == list(range(len(pairs)))
    delta = next(data for name, data in pairs if name == "response.output_text.delta")
    assert delta["content_index"] == 0
    assert delta["output_index"] == 0
    assert delta["logprobs"] == []
    assert pairs[-1][0] == "response.incomplete"
    assert "[DONE]" not in raw


def test_responses_reasoning(up: FakeUpstream, oai: openai.OpenAI) -> None:
    thinking = "".join(thinking_tokens("Say hello to the gateway"))
    resp = oai.responses.create(model="fake-think", input="Say hello to the gateway")
    assert [o.type for o in resp.output] == ["reasoning", "message"]
    reasoning = resp.output[0]
    assert isinstance(reasoning, openai.types.responses.ResponseReasoningItem)
    assert reasoning.id.startswith("rs_")
    assert reasoning.summary == []
    assert reasoning.content is not None
    assert [(c.type, c.text) for c in reasoning.content] == [("reasoning_text", thinking)]
    assert resp.output_text == reply_text(MESSAGES, 8)
    assert resp.usage is not None
    assert (resp.usage.output_tokens, resp.usage.output_tokens_details.reasoning_tokens) == (THINK + 8, THINK)
    assert resp.reasoning is not None
    assert resp.reasoning.effort == "medium"

    off = oai.responses.create(model="fake-think", input="Say hello to the gateway", reasoning={"effort": "none"})
    assert [o.type for o in off.output] == ["message"]

    with oai.responses.stream(model="fake-think", input="Say hello to the gateway", max_output_tokens=THINK) as s:
        events = list(s)
    kinds = [e.type for e in events]
    assert kinds.count("response.reasoning_text.delta") == THINK
    assert "response.output_text.delta" not in kinds
    text_done = next(e for e in events if e.type == "response.reasoning_text.done")
    assert text_done.text == thinking
    assert events[-1].type == "response.incomplete"
    assert [o.type for o in events[-1].response.output] == ["reasoning"]

    # reasoning items given back in the input are accepted and not counted
    items: list[Any] = [
        {"role": "user", "content": "Say hello to the gateway"},
        reasoning.model_dump(exclude_none=True),
        {"role": "assistant", "content": [{"type": "output_text", "text": resp.output_text}]},
        {"role": "user", "content": "Again"},
    ]
    again = oai.responses.create(model="fake-think", input=items)
    assert again.output_text == "".join(reply_tokens("Again", 8))
    assert again.usage is not None
    assert again.usage.input_tokens == 5 + 8 + 1 + 3 * 4


# ---- Ollama: tool calls, thinking, generate -----------------------------------------------------


def test_ollama_chat_tool_call_round_trip(up: FakeUpstream, oll: ollama.Client) -> None:
    conversation: list[Any] = [{"role": "user", "content": ASK}]
    first = oll.chat(model="fake-chat", messages=conversation, tools=OAI_TOOLS, stream=False)
    assert first.done_reason == "stop"
    assert first.message.content == ""
    assert first.message.tool_calls is not None
    (call,) = first.message.tool_calls
    assert isinstance(call, ollama.Message.ToolCall)
    assert call.function.name == "get_weather"
    assert call.function.arguments == tool_call_input(WEATHER, ASK)
    assert first.eval_count == len(_pieces(WEATHER, ASK))
    assert first.prompt_eval_count == prompt_token_count(conversation)
    raw = up.requests()[-1]
    assert raw["body"]["tools"][0]["function"]["name"] == "get_weather"

    conversation += [first.message, {"role": "tool", "content": "18 C and sunny", "tool_name": "get_weather"}]
    second = oll.chat(model="fake-chat", messages=conversation, tools=OAI_TOOLS, stream=False)
    assert second.message.tool_calls is None
    assert second.message.content == "".join(reply_tokens(ASK, 8))
    assert (second.done_reason, second.eval_count) == ("stop", 8)
    assert oll.chat(model="fake-chat", messages=MESSAGES, tools=OAI_TOOLS, stream=False).message.tool_calls is None

    # a call that does not fit in num_predict is not made
    needed = len(_pieces(WEATHER, ASK))
    short = oll.chat(
        model="fake-chat", messages=[conversation[0]], tools=OAI_TOOLS, options={"num_predict": needed - 1}
    )
    assert (short.message.tool_calls, short.done_reason, short.eval_count) == (None, "length", needed - 1)


def test_ollama_chat_tool_call_stream(up: FakeUpstream, oll: ollama.Client) -> None:
    parts = list(
        oll.chat(model="fake-chat", messages=[{"role": "user", "content": TOOL_ASK}], tools=OAI_TOOLS, stream=True)
    )
    assert len(parts) == 2  # the whole call in one line, then the final object
    assert parts[0].message.tool_calls is not None
    assert parts[0].message.tool_calls[0].function.arguments == tool_call_input(WEATHER, TOOL_ASK)
    assert (parts[0].done, parts[0].message.content) == (False, "")
    assert (parts[1].done, parts[1].done_reason, parts[1].eval_count) == (True, "stop", len(_pieces(WEATHER, TOOL_ASK)))
    assert parts[1].message.tool_calls is None
    with _http(up) as client:
        body = {"model": "fake-chat", "messages": [{"role": "user", "content": TOOL_ASK}], "tools": OAI_TOOLS}
        lines = [orjson.loads(line) for line in client.post("/api/chat", json=body).text.splitlines()]
    # Ollama's Message.ToolCall (in the installed ollama package) has a function and nothing else: no id, no index
    assert lines[0]["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": tool_call_input(WEATHER, TOOL_ASK)}}
    ]
    assert up.stats()["completion_tokens_served"] == 2 * len(_pieces(WEATHER, TOOL_ASK))


def test_ollama_thinking(up: FakeUpstream, oll: ollama.Client) -> None:
    thinking = "".join(thinking_tokens(last_user_text(MESSAGES)))
    whole = oll.chat(model="fake-think", messages=MESSAGES, stream=False, think=True)
    assert whole.message.thinking == thinking
    assert whole.message.content == reply_text(MESSAGES, 8)
    assert whole.eval_count == THINK + 8
    parts = list(oll.chat(model="fake-think", messages=MESSAGES, stream=True))
    assert [p.message.thinking for p in parts[:THINK]] == list(thinking_tokens(last_user_text(MESSAGES)))
    assert all(p.message.content == "" for p in parts[:THINK])
    assert "".join(p.message.content or "" for p in parts) == reply_text(MESSAGES, 8)
    assert parts[-1].eval_count == THINK + 8
    off = oll.chat(model="fake-think", messages=MESSAGES, stream=False, think=False)
    assert (off.message.thinking, off.eval_count) == (None, 8)
    capped = oll.chat(model="fake-think", messages=MESSAGES, stream=False, options={"num_predict": 2})
    assert (capped.message.thinking, capped.message.content, capped.done_reason) == (
        "".join(thinking_tokens(last_user_text(MESSAGES), 2)),
        "",
        "length",
    )
    with pytest.raises(ollama.ResponseError) as unsupported:
        oll.chat(model="fake-chat", messages=MESSAGES, stream=False, think=True)
    assert (unsupported.value.status_code, unsupported.value.error) == (400, '"fake-chat" does not support thinking')
    with _http(up) as client:
        shown = client.post("/api/show", json={"model": "fake-think"}).json()
    assert shown["capabilities"] == ["completion", "tools", "thinking"]


def test_ollama_generate(up: FakeUpstream, oll: ollama.Client) -> None:
    prompt = "Say hello to the gateway"
    whole = oll.generate(model="fake-chat", prompt=prompt, system=SYSTEM, stream=False)
    assert isinstance(whole, ollama.GenerateResponse)
    assert whole.response == "".join(reply_tokens(prompt, 8))
    assert (whole.done, whole.done_reason, whole.eval_count) == (True, "stop", 8)
    assert whole.prompt_eval_count == PROMPT_TOKENS - 4  # system and prompt: one message
    assert whole.thinking is None
    assert whole.context is not None
    assert len(whole.context) == 3 + 5 + 8  # the conversation so far, as token ids

    # the context of an answer is counted when given back; raw ignores system and context, and returns none
    follow = oll.generate(model="fake-chat", prompt="And again", context=whole.context, stream=False)
    assert follow.prompt_eval_count == len(whole.context) + 2 + 4
    assert follow.context is not None
    assert follow.context[: len(whole.context)] == list(whole.context)
    raw = oll.generate(model="fake-chat", prompt=prompt, system=SYSTEM, raw=True, context=[1, 2], stream=False)
    assert (raw.prompt_eval_count, raw.context) == (5, None)

    parts = list(
        oll.generate(model="fake-think", prompt=prompt, think=True, options={"num_predict": THINK + 3}, stream=True)
    )
    assert "".join(p.thinking or "" for p in parts) == "".join(thinking_tokens(prompt))
    assert "".join(p.response or "" for p in parts) == "".join(reply_tokens(prompt, 3))
    assert (parts[-1].done_reason, parts[-1].eval_count) == ("length", THINK + 3)
    assert parts[-1].context is not None

    words = reply_tokens(prompt, 8)
    stopped = oll.generate(model="fake-chat", prompt=prompt, options={"stop": [words[5].strip()]}, stream=False)
    assert (stopped.response, stopped.done_reason, stopped.eval_count) == ("".join(words[:5]), "stop", 5)

    with_image = oll.generate(model="fake-chat", prompt=prompt, images=[PNG], stream=False)
    assert with_image.prompt_eval_count == whole.prompt_eval_count - 3  # images are not counted
    assert up.requests()[-1]["body"]["images"] == [PNG]
    with _http(up) as client:
        bad = client.post("/api/generate", json={"model": "fake-chat", "prompt": prompt, "images": ["not base64!"]})
        assert (bad.status_code, bad.json()) == (400, {"error": "illegal base64 data at input byte 3"})
        bad_chat = {"model": "fake-chat", "messages": [{"role": "user", "content": "x", "images": ["@@"]}]}
        assert client.post("/api/chat", json=bad_chat).status_code == 400
        streamed = client.post("/api/generate", json={"model": "fake-chat", "prompt": prompt})  # streams by default
    assert streamed.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in streamed.text.splitlines()]
    assert [line["response"] for line in lines[:-1]] == list(words)
    assert "context" not in lines[0]
    assert (lines[-1]["done"], lines[-1]["eval_count"]) == (True, 8)
    assert lines[-1]["context"] == whole.context[3:]  # no system prompt this time


def test_ollama_format(up: FakeUpstream, oll: ollama.Client) -> None:
    prompt = "Say hello to the gateway"
    answer = "".join(reply_tokens(prompt, 8)).strip()
    as_json = oll.generate(model="fake-chat", prompt=prompt, format="json", stream=False)
    assert json.loads(as_json.response or "") == {"answer": answer}
    pieces = json_pieces(json.dumps({"answer": answer}))
    assert as_json.eval_count == len(pieces)
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}, "count": {"type": "integer"}}}
    chat = oll.chat(model="fake-chat", messages=MESSAGES, format=schema, stream=False)
    assert json.loads(chat.message.content or "") == schema_value(schema, answer)
    streamed = list(
        oll.generate(model="fake-chat", prompt=prompt, format="json", options={"num_predict": 3}, stream=True)
    )
    assert "".join(p.response or "" for p in streamed) == "".join(pieces[:3])  # cut JSON, as Ollama's at the cap
    assert streamed[-1].done_reason == "length"
    with _http(up) as client:
        bad = client.post("/api/generate", json={"model": "fake-chat", "prompt": prompt, "format": "yaml"})
    assert bad.status_code == 400


# ---- Anthropic: thinking ------------------------------------------------------------------------


def test_anthropic_thinking(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    thinking = "".join(thinking_tokens(last_user_text(MESSAGES)))
    msg = claude.messages.create(model="fake-think", max_tokens=100, system=SYSTEM, messages=CLAUDE_MESSAGES)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    block = msg.content[0]
    assert isinstance(block, anthropic.types.ThinkingBlock)
    assert (block.thinking, block.signature) == (thinking, thinking_signature(thinking))
    assert msg.content[1].type == "text"
    assert msg.content[1].text == reply_text(MESSAGES, 8)
    assert (msg.stop_reason, msg.usage.output_tokens) == ("end_turn", THINK + 8)

    with claude.messages.stream(model="fake-think", max_tokens=100, messages=CLAUDE_MESSAGES) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.content[0] == block
    assert final.content[1].type == "text"
    assert final.content[1].text == reply_text(MESSAGES, 8)
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert [d.type for d in deltas] == ["thinking_delta"] * THINK + ["signature_delta"] + ["text_delta"] * 8
    assert final.usage.output_tokens == THINK + 8

    # the thinking block comes back in the next turn; disabled thinking makes none; the cap cuts it
    conversation: list[Any] = [
        *CLAUDE_MESSAGES,
        {"role": "assistant", "content": msg.content},
        {"role": "user", "content": "Again"},
    ]
    again = claude.messages.create(model="fake-think", max_tokens=100, messages=conversation)
    assert again.usage.input_tokens == 5 + 8 + 1 + 3 * 4  # the thinking is not counted
    off = claude.messages.create(
        model="fake-think", max_tokens=100, messages=CLAUDE_MESSAGES, thinking={"type": "disabled"}
    )
    assert [b.type for b in off.content] == ["text"]
    short = claude.messages.create(model="fake-think", max_tokens=3, messages=CLAUDE_MESSAGES)
    assert [b.type for b in short.content] == ["thinking"]
    assert (short.stop_reason, short.usage.output_tokens) == ("max_tokens", 3)


def test_anthropic_thinking_then_tool_use_wire_format(up: FakeUpstream) -> None:
    body = {"model": "fake-think", "max_tokens": 100, "tools": TOOLS, "messages": [{"role": "user", "content": ASK}]}
    with _http(up) as client:
        pairs = _sse_pairs(client.post("/v1/messages", json={**body, "stream": True}).text)
    starts = [(d["index"], d["content_block"]["type"]) for n, d in pairs if n == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "text"), (2, "tool_use")]
    assert pairs[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert pairs[2][0] == "ping"
    stops = [d["index"] for n, d in pairs if n == "content_block_stop"]
    assert stops == [0, 1, 2]
    signature = next(
        i for i, (n, d) in enumerate(pairs) if n == "content_block_delta" and d["delta"]["type"] == "signature_delta"
    )
    assert pairs[signature + 1] == ("content_block_stop", {"type": "content_block_stop", "index": 0})
    end = pairs[-2][1]
    assert end["delta"]["stop_reason"] == "tool_use"
    assert end["usage"]["output_tokens"] == THINK + 2 + len(_pieces(WEATHER, ASK))


# ---- the ledger and the command line ------------------------------------------------------------


def test_new_endpoints_count_in_the_ledger(up: FakeUpstream, oai: openai.OpenAI) -> None:
    oai.completions.create(model="fake-chat", prompt=PROMPT, max_tokens=2)
    oai.responses.create(model="fake-think", input="Say hello to the gateway", max_output_tokens=THINK + 1)
    with oai.responses.stream(model="fake-chat", input="Say hello to the gateway") as s:
        s.until_done()
    stats = up.stats()
    assert stats["completion_tokens_served"] == 2 + THINK + 1 + 8
    assert stats["prompt_tokens"] == 4 + 2 * (5 + 4)
    assert stats["requests"] == stats["chat_requests"] == 3
    assert [r["path"] for r in up.requests()] == ["/v1/completions", "/v1/responses", "/v1/responses"]


def test_runs_as_a_module() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_upstream", "--port", "0"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().startswith("READY ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()  # type: ignore[union-attr]


# ---- failure modes -----------------------------------------------------------------------------


def test_midfail_breaks_streams(up: FakeUpstream, oai: openai.OpenAI) -> None:
    received: list[str] = []
    stream = oai.chat.completions.create(
        model="fake-midfail",
        messages=MESSAGES,
        stream=True,
    )
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        _drain_openai_stream(stream, received)
    assert "".join(received) == reply_text(MESSAGES, 3)

    lines: list[str] = []
    with _http(up) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            _drain_lines(client, "/api/chat", {"model": "fake-midfail", "messages": MESSAGES}, lines)
        assert len(lines) == 3
        assert all('"done":true' not in line for line in lines)
        # non-stream requests are cut off too
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/chat/completions", json={"model": "fake-midfail", "messages": MESSAGES})
    stats = up.stats()
    assert stats["aborted"] == 3
    assert stats["completion_tokens_served"] == 6


def test_nousage_reports_no_usage(up: FakeUpstream, oai: openai.OpenAI, oll: ollama.Client) -> None:
    resp = oai.chat.completions.create(model="fake-nousage", messages=MESSAGES)
    assert resp.usage is None
    assert resp.choices[0].message.content == reply_text(MESSAGES, 8)
    chunks = list(
        oai.chat.completions.create(
            model="fake-nousage",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no trailing usage-only chunk
    final = oll.chat(model="fake-nousage", messages=MESSAGES, stream=False)
    assert final.done
    assert final.prompt_eval_count is None
    assert final.eval_count is None


def test_stats_count_served_tokens(up: FakeUpstream, oai: openai.OpenAI, oll: ollama.Client) -> None:
    oai.chat.completions.create(model="fake-chat", messages=MESSAGES)
    list(oai.chat.completions.create(model="fake-chat", messages=MESSAGES, stream=True, max_tokens=5))
    list(oll.chat(model="fake-chat", messages=MESSAGES, stream=True, options={"num_predict": 2}))
    stats = up.stats()
    assert stats["completion_tokens_served"] == 8 + 5 + 2
    assert stats["prompt_tokens"] == 3 * PROMPT_TOKENS
    assert stats["requests"] == stats["chat_requests"] == 3
    assert stats["disconnects"] == 0
    assert stats["in_flight"] == 0

    logged = up.requests()
    assert [r["path"] for r in logged] == ["/v1/chat/completions", "/v1/chat/completions", "/api/chat"]
    assert logged[1]["body"]["max_tokens"] == 5
    assert "authorization" not in logged[0]["headers"]
    assert logged[0]["headers"]["content-type"] == "application/json"


def test_slow_model_paces_tokens(up: FakeUpstream) -> None:
    body = {"model": "fake-slow", "messages": MESSAGES, "stream": True, "max_tokens": 3}
    started = time.perf_counter()
    with _http(up) as client:
        client.post("/v1/chat/completions", json=body).raise_for_status()
    assert time.perf_counter() - started >= 0.14


def test_client_disconnect_mid_stream_is_counted(up: FakeUpstream) -> None:
    body = {"model": "fake-long", "messages": MESSAGES, "stream": True}
    with _http(up) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen == 5:
                break  # leaving the block closes the connection mid-stream
    stats = up.wait_for_stats(lambda s: s["disconnects"] == 1 and s["in_flight"] == 0)
    assert 4 <= stats["completion_tokens_served"] < 200
    time.sleep(0.05)
    assert up.stats()["disconnects"] == 1  # counted exactly once


def test_hang_never_answers_and_counts_disconnect(up: FakeUpstream) -> None:
    with _http(up, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/api/chat", json={"model": "fake-hang", "messages": MESSAGES, "stream": False})
    stats = up.wait_for_stats(lambda s: s["disconnects"] == 1 and s["in_flight"] == 0)
    assert stats["completion_tokens_served"] == 0


# ---- auth and process lifecycle ----------------------------------------------------------------


def test_api_key_enforced_and_clean_sigterm_exit() -> None:
    with run_fake_upstream(api_key=API_KEY, tokens=4) as up:
        bad = openai.OpenAI(base_url=up.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=up.url + "/v1", api_key=API_KEY, max_retries=0)
        resp = good.chat.completions.create(model="fake-chat", messages=MESSAGES)
        assert resp.usage is not None
        assert resp.usage.completion_tokens == 4

        with pytest.raises(ollama.ResponseError) as denied:
            ollama.Client(host=up.url).list()
        assert denied.value.status_code == 401
        assert denied.value.error == "unauthorized"
        authed = ollama.Client(host=up.url, headers={"Authorization": f"Bearer {API_KEY}"})
        assert len(authed.list().models) == len(MODELS)

        assert up.stats()["requests"] == 4  # control endpoints need no key and are not counted
        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(timeout=10) == 0


def test_keys_rotate_while_running() -> None:
    """POST /_control/keys: a rotation as a provider runs it: old and new both accepted, then only the new one."""
    with run_fake_upstream(api_key=API_KEY, tokens=4) as up:

        def answers(key: str) -> bool:
            client = openai.OpenAI(base_url=up.url + "/v1", api_key=key, max_retries=0)
            try:
                client.chat.completions.create(model="fake-chat", messages=MESSAGES)
            except openai.AuthenticationError:
                return False
            return True

        new_key = "rotated-" + API_KEY
        assert (answers(API_KEY), answers(new_key)) == (True, False)
        up.set_keys(API_KEY, new_key)
        assert (answers(API_KEY), answers(new_key)) == (True, True)
        up.set_keys(new_key)
        assert (answers(API_KEY), answers(new_key)) == (False, True)
        # Anthropic clients' x-api-key follows the same set
        with _http(up) as client:
            body = {"model": "fake-chat", "max_tokens": 10, "messages": CLAUDE_MESSAGES}
            headers = {"anthropic-version": "2023-06-01"}
            assert client.post("/v1/messages", json=body, headers={**headers, "x-api-key": new_key}).status_code == 200
            assert client.post("/v1/messages", json=body, headers={**headers, "x-api-key": API_KEY}).status_code == 401
            # an empty or malformed set is refused and changes nothing
            malformed: list[dict[str, object]] = [{"keys": []}, {"keys": [""]}, {"keys": "x"}, {}]
            for bad in malformed:
                refused = client.post("/_control/keys", json=bad)
                assert refused.status_code == 422
                assert "keys" in refused.json()["error"]
        assert answers(new_key)
        assert up.stats()["unauthorized"] == 3  # the new key before it was added, the old one after, x-api-key
        # the keys never reach the request log
        assert all(new_key not in str(logged) for logged in up.requests())


def test_sigint_exits_cleanly_with_request_in_flight() -> None:
    with run_fake_upstream(latency=30) as up:
        outcome: list[object] = []

        def call() -> None:
            try:
                with _http(up, timeout=10) as client:
                    r = client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": MESSAGES})
                    outcome.append(r.status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        up.wait_for_stats(lambda s: s["in_flight"] == 1)
        started = time.perf_counter()
        # A request stuck in --latency must not keep the process alive past the grace period.
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(timeout=10) == 0
        assert time.perf_counter() - started < 5
        worker.join(timeout=10)
        # uvicorn cancels the stuck request at the end of the grace period and answers it with a 500
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert outcome[0] == 500 or isinstance(outcome[0], httpx.HTTPError)


# ---- prompt-cache reads (fake-cached) ------------------------------------------------------------


def test_fake_cached_reports_half_the_prompt_as_read_from_a_cache(
    up: FakeUpstream, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    cached = PROMPT_TOKENS // 2
    chat = oai.chat.completions.create(model="fake-cached", messages=MESSAGES)
    assert chat.usage is not None and chat.usage.prompt_tokens == PROMPT_TOKENS
    assert chat.usage.prompt_tokens_details is not None and chat.usage.prompt_tokens_details.cached_tokens == cached
    chunks = list(
        oai.chat.completions.create(
            model="fake-cached", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == cached
    response = oai.responses.create(model="fake-cached", input=MESSAGES)
    assert response.usage is not None and response.usage.input_tokens == PROMPT_TOKENS
    assert response.usage.input_tokens_details.cached_tokens == cached
    system, user = MESSAGES
    message = claude.messages.create(model="fake-cached", system=system["content"], messages=[user], max_tokens=50)
    # Anthropic's input_tokens leaves out what the cache read.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (PROMPT_TOKENS - cached, cached)
    plain = oai.chat.completions.create(model="fake-chat", messages=MESSAGES)
    assert plain.usage is not None and plain.usage.prompt_tokens_details is None  # other models: unchanged


# ---- the ledger (GET /_ledger) -------------------------------------------------------------------


def test_ledger_counts_finished_answers_and_what_a_client_left_behind(up: FakeUpstream, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(model="fake-chat", messages=MESSAGES, max_tokens=5)
    list(oai.chat.completions.create(model="fake-chat", messages=MESSAGES, stream=True))
    # fake-long: 200 tokens at least 0.01 s apart; the client reads three and leaves.
    body = {"model": "fake-long", "messages": MESSAGES, "stream": True}
    with _http(up) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        deltas = 0
        for line in r.iter_lines():
            deltas += '"content":"' in line and '"content":""' not in line
            if deltas == 3:
                break
    deadline = time.monotonic() + 5
    while not up.ledger().get("fake-long", {}).get("cut_short") and time.monotonic() < deadline:
        time.sleep(0.02)
    ledger = up.ledger()
    assert ledger["fake-chat"] == {
        "answers": 2,
        "prompt_tokens": 2 * PROMPT_TOKENS,
        "completion_tokens": 5 + 8,
        "finished": 2,
        "finished_prompt_tokens": 2 * PROMPT_TOKENS,
        "finished_completion_tokens": 5 + 8,
        "cut_short": 0,
        "cut_short_prompt_tokens": 0,
        "cut_short_completion_tokens": 0,
    }
    long = ledger["fake-long"]
    assert (long["answers"], long["finished"], long["cut_short"]) == (1, 0, 1)
    assert long["cut_short_prompt_tokens"] == long["prompt_tokens"] == PROMPT_TOKENS
    # What it produced before noticing the client had gone: at least what was read, far from the 200 planned.
    assert 3 <= long["cut_short_completion_tokens"] == long["completion_tokens"] < 200
    assert long["finished_completion_tokens"] == 0
    up.reset()
    assert up.ledger() == {}
