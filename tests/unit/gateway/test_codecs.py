"""The protocol codecs over the internal representation: what each client surface is answered validates against
the official SDK's types, requests decode into the same representation whatever protocol they came in, and what
cannot be expressed is refused with the feature named."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message
from openai.types import Completion
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from gatehouse.gateway import ir
from gatehouse.gateway.translate import anthropic, completions, ollama, openai, responses
from gatehouse.gateway.translate.common import TranslationError
from gatehouse.gateway.translate.upstream import request_for
from gatehouse.upstreams.config import UpstreamKind

RESULT = ir.Result(
    [
        ir.Reasoning("thinking it over", "sig"),
        ir.Text("It is sunny."),
        ir.ToolCall("call_1", "weather", '{"city":"Oslo"}'),
    ],
    "tool_use",
    usage=ir.Usage(input=12, output=7, cached=2, reasoning=3),
)
TOOL = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_every_surface_answers_in_its_sdks_shape() -> None:
    chat = ChatCompletion.model_validate(openai.encode_result(RESULT, model="m", response_id="chatcmpl-1", created=1))
    assert chat.choices[0].finish_reason == "tool_calls" and chat.choices[0].message.tool_calls
    assert chat.usage is not None and chat.usage.prompt_tokens == 12

    message = Message.model_validate(anthropic.encode_result(RESULT, model="m", message_id="msg_1"))
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.stop_reason == "tool_use"
    # Anthropic counts cached prompt tokens apart from input_tokens.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (10, 2)

    response = Response.model_validate(responses.Render({"model": "m"}, "m").whole(RESULT))
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output_text == "It is sunny." and response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 3

    text = ir.Result([ir.Text(" there")], "length", usage=ir.Usage(3, 1))
    completion = Completion.model_validate(
        completions.encode_result(text, model="m", response_id="cmpl-1", created=1, echo="hello")
    )
    assert completion.choices[0].text == "hello there" and completion.choices[0].finish_reason == "length"

    ollama_chat = ollama.encode_chat_result(RESULT, model="m")
    assert ollama_chat["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert ollama_chat["message"]["thinking"] == "thinking it over"
    assert ollama.encode_generate_result(text, model="m")["done_reason"] == "length"


def _conversation(request: ir.Request) -> list[tuple[str, list[str]]]:
    """Roles and part kinds: what a translation must keep."""
    return [(m.role, [type(p).__name__ for p in m.parts]) for m in request.messages]


def test_one_tool_round_trip_decodes_alike_from_every_protocol() -> None:
    chat = openai.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "brief"},
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": TOOL}}],
        }
    )
    messages = anthropic.decode_request(
        {
            "model": "m",
            "max_tokens": 10,
            "system": "brief",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "sunny"}]},
            ],
            "tools": [{"name": "weather", "input_schema": TOOL}],
        }
    )
    items = [
        {"type": "message", "role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    resp = responses.decode_request(
        {"model": "m", "instructions": "brief", "tools": [{"type": "function", "name": "weather", "parameters": TOOL}]},
        [],
        items,
    )
    expected = [("system", ["Text"]), ("user", ["Text"]), ("assistant", ["ToolCall"]), ("tool", ["ToolResult"])]
    for request in (chat, messages, resp):
        assert _conversation(request) == expected
        result = request.messages[3].parts[0]
        assert isinstance(result, ir.ToolResult) and (result.call_id, result.name) == ("c1", "weather")
        assert [t.name for t in request.tools] == ["weather"]


def test_tool_results_lead_their_anthropic_user_turn() -> None:
    request = openai.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "two cities"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "w", "arguments": '{"c":1}'}},
                        {"id": "b", "type": "function", "function": {"name": "w", "arguments": '{"c":2}'}},
                    ],
                },
                {"role": "tool", "tool_call_id": "a", "content": "one"},
                {"role": "tool", "tool_call_id": "b", "content": "two"},
                {"role": "user", "content": "and?"},
            ],
        }
    )
    _, body = request_for(UpstreamKind.ANTHROPIC, request, "claude", 100, [])
    last = body["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "tool_result", "text"]
    assert body["messages"][1]["content"][0]["input"] == {"c": 1}


def test_hints_are_mapped_or_named() -> None:
    request = responses.decode_request(
        {"model": "m", "reasoning": {"effort": "high"}, "prompt_cache_key": "k", "include": ["x"], "user": "u"},
        [],
        [{"type": "message", "role": "user", "content": "hi"}],
    )
    dropped: list[str] = []
    _, body = request_for(UpstreamKind.OPENAI, request, "gpt", None, dropped)
    assert body["reasoning_effort"] == "high" and body["prompt_cache_key"] == "k" and body["user"] == "u"
    assert dropped == ["include"]
    dropped = []
    _, body = request_for(UpstreamKind.ANTHROPIC, request, "claude", 20000, dropped)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["metadata"] == {"user_id": "u"} and set(dropped) == {"prompt_cache_key", "include"}
    dropped = []
    _, body = request_for(UpstreamKind.OLLAMA, request, "llama", None, dropped)
    assert body["think"] == "high" and set(dropped) == {"prompt_cache_key", "include", "user"}


@pytest.mark.parametrize(
    ("decode", "feature"),
    [
        (lambda: responses.decode_request({"model": "m", "tools": [{"type": "web_search"}]}, [], []), "web_search"),
        (lambda: responses.decode_request({"model": "m", "background": True}, [], []), "background"),
        (
            lambda: anthropic.decode_request(
                {"model": "m", "max_tokens": 1, "messages": [], "tools": [{"type": "bash_20250124", "name": "bash"}]}
            ),
            "bash_20250124",
        ),
        (lambda: openai.decode_request({"model": "m", "messages": [], "n": 3}), "n > 1"),
        (lambda: completions.decode_request({"model": "m", "prompt": ["a", "b"]}), "one prompt"),
    ],
)
def test_what_would_change_the_meaning_is_refused_by_name(decode: Any, feature: str) -> None:
    with pytest.raises(TranslationError, match=feature):
        decode()


def test_a_raw_prompt_goes_where_the_upstream_takes_one() -> None:
    request = completions.decode_request({"model": "m", "prompt": "def f(", "suffix": "return x", "max_tokens": 8})
    path, body = request_for(UpstreamKind.OPENAI, request, "coder", 8, [])
    assert path == "/v1/completions" and body["prompt"] == "def f(" and body["suffix"] == "return x"
    path, body = request_for(UpstreamKind.OLLAMA, request, "coder", 8, [])
    assert path == "/api/generate" and body["raw"] is True and body["options"]["num_predict"] == 8
    dropped: list[str] = []
    path, body = request_for(UpstreamKind.ANTHROPIC, request, "claude", 8, dropped)
    assert path == "/v1/messages" and body["messages"] == [{"role": "user", "content": "def f("}]
    assert "suffix" in dropped


def test_anthropic_stream_usage_counts_cache_and_the_final_delta() -> None:
    decoder = anthropic.SseDecoder()
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 1}},
    }
    decoder.feed(b"data: " + orjson.dumps(start))
    decoder.feed(
        b"data: "
        + orjson.dumps({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}})
    )
    assert decoder.usage is not None and decoder.usage.pair() == (15, 9) and decoder.usage.cached == 10
