"""Checks the fake upstream against the official openai, ollama and anthropic clients and raw HTTP."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import orjson
import pytest

from tests.support.fake_upstream import (
    MODELS,
    FakeUpstream,
    anthropic_chat_messages,
    fake_embedding,
    last_user_text,
    prompt_token_count,
    reply_text,
    reply_tokens,
    run_fake_upstream,
    tool_call_input,
)

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
