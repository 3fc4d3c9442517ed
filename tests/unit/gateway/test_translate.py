"""Unit tests for gatehouse.gateway.translate (OpenAI <-> Ollama protocol translation)."""

from __future__ import annotations

import base64
import re
from array import array
from typing import Any

import ollama
import orjson
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gatehouse.gateway.translate.chat import (
    ollama_chat_request_to_openai,
    ollama_chat_response_to_openai,
    openai_chat_request_to_ollama,
    openai_chat_response_to_ollama,
)
from gatehouse.gateway.translate.common import JSON, TranslationError, UpstreamStreamError, rfc3339_now
from gatehouse.gateway.translate.embeddings import (
    ollama_embed_request_to_openai,
    ollama_embed_response_to_openai,
    openai_embed_request_to_ollama,
    openai_embed_response_to_ollama,
)
from gatehouse.gateway.translate.stream import OllamaToOpenAIStream, OpenAIToOllamaStream
from gatehouse.gateway.translate.usage import usage_from_ollama, usage_from_openai

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
JPEG_B64 = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 16).decode()
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

WEATHER_TOOL: JSON = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def test_rfc3339_now_format() -> None:
    assert RFC3339.match(rfc3339_now())


def test_error_types() -> None:
    assert issubclass(TranslationError, ValueError)
    assert issubclass(UpstreamStreamError, Exception)
    assert not issubclass(UpstreamStreamError, ValueError)


# --------------------------------------------------------------------------------------------------
# OpenAI chat request -> Ollama
# --------------------------------------------------------------------------------------------------


def test_openai_request_to_ollama_basic() -> None:
    body: JSON = {
        "model": "alias",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "dev note"},
            {"role": "user", "content": "hi"},
        ],
    }
    req = openai_chat_request_to_ollama(body, model="llama3.2:3b")
    assert req == {
        "model": "llama3.2:3b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "system", "content": "dev note"},
            {"role": "user", "content": "hi"},
        ],
        "stream": False,
    }
    assert openai_chat_request_to_ollama({**body, "stream": True}, model="m")["stream"] is True
    # the input is not mutated
    assert body["model"] == "alias"
    assert body["messages"][1]["role"] == "developer"


def test_openai_request_to_ollama_options() -> None:
    body: JSON = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 42,
        "stop": "END",
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "n": 1,
        "user": "someone",
        "logit_bias": {"1": 2},
    }
    req = openai_chat_request_to_ollama(body, model="m")
    assert req["options"] == {
        "num_predict": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 42,
        "stop": ["END"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    req = openai_chat_request_to_ollama(
        {"messages": [], "max_completion_tokens": 7, "max_tokens": 99, "stop": ["a", "b"], "temperature": 0},
        model="m",
    )
    assert req["options"] == {"num_predict": 7, "stop": ["a", "b"], "temperature": 0}
    # no options at all -> no "options" key; None values are ignored
    req = openai_chat_request_to_ollama({"messages": [], "temperature": None, "stop": None}, model="m")
    assert "options" not in req


def test_openai_request_to_ollama_bad_stop() -> None:
    with pytest.raises(TranslationError, match="stop"):
        openai_chat_request_to_ollama({"messages": [], "stop": 5}, model="m")


def test_openai_request_to_ollama_n_greater_than_one() -> None:
    with pytest.raises(TranslationError, match="n > 1"):
        openai_chat_request_to_ollama({"messages": [], "n": 2}, model="m")


def test_openai_request_to_ollama_response_format() -> None:
    base: JSON = {"messages": [{"role": "user", "content": "x"}]}
    req = openai_chat_request_to_ollama({**base, "response_format": {"type": "json_object"}}, model="m")
    assert req["format"] == "json"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req = openai_chat_request_to_ollama(
        {**base, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
        model="m",
    )
    assert req["format"] == schema
    req = openai_chat_request_to_ollama({**base, "response_format": {"type": "text"}}, model="m")
    assert "format" not in req
    with pytest.raises(TranslationError, match="response_format"):
        openai_chat_request_to_ollama({**base, "response_format": {"type": "grammar"}}, model="m")


def test_openai_request_to_ollama_content_parts_and_images() -> None:
    body: JSON = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "low"},
                    },
                    {"type": "text", "text": "in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG_B64}"}},
                ],
            }
        ]
    }
    req = openai_chat_request_to_ollama(body, model="llava")
    assert req["messages"] == [
        {"role": "user", "content": "what is\nin this picture?", "images": [PNG_B64, JPEG_B64]},
    ]


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("https://example.com/cat.png", "https"),
        ("http://example.com/cat.png", "http"),
        ("data:image/svg+xml,<svg/>", "base64"),
    ],
)
def test_openai_request_to_ollama_unfetchable_images(url: str, match: str) -> None:
    body: JSON = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    with pytest.raises(TranslationError, match=match):
        openai_chat_request_to_ollama(body, model="m")


def test_openai_request_to_ollama_unsupported_part() -> None:
    body: JSON = {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]}
    with pytest.raises(TranslationError, match="input_audio"):
        openai_chat_request_to_ollama(body, model="m")


def test_openai_request_to_ollama_tools() -> None:
    body: JSON = {
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
            {
                "role": "tool",
                "tool_call_id": "call_b",
                "name": "explicit_name",
                "content": [{"type": "text", "text": "rainy"}],
            },
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
    }
    req = openai_chat_request_to_ollama(body, model="m")
    assert req["tools"] == [WEATHER_TOOL]
    assert "tool_choice" not in req
    assert req["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        ],
    }
    # tool_name from the matching tool call id, or from an explicit "name"
    assert req["messages"][2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
    assert req["messages"][3] == {"role": "tool", "content": "rainy", "tool_name": "explicit_name"}
    # tool_choice "none" means no tools may be called: do not offer them
    assert "tools" not in openai_chat_request_to_ollama({**body, "tool_choice": "none"}, model="m")


def test_openai_request_to_ollama_bad_tool_arguments() -> None:
    def body(args: Any) -> JSON:
        return {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}],
                }
            ]
        }

    with pytest.raises(TranslationError, match="not valid JSON"):
        openai_chat_request_to_ollama(body("{oops"), model="m")
    with pytest.raises(TranslationError, match="JSON object"):
        openai_chat_request_to_ollama(body("[1, 2]"), model="m")
    req = openai_chat_request_to_ollama(body(""), model="m")
    assert req["messages"][0]["tool_calls"][0]["function"]["arguments"] == {}


def test_openai_request_to_ollama_validates_with_ollama_client() -> None:
    body: JSON = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"X"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [WEATHER_TOOL],
        "stream": True,
        "max_tokens": 5,
    }
    req = openai_chat_request_to_ollama(body, model="m")
    ollama._types.ChatRequest.model_validate(req)


# --------------------------------------------------------------------------------------------------
# Ollama chat request -> OpenAI
# --------------------------------------------------------------------------------------------------


def test_ollama_request_to_openai_basic_and_stream() -> None:
    body: JSON = {
        "model": "alias",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "keep_alive": "5m",
        "think": False,
    }
    req = ollama_chat_request_to_openai(body, model="gpt-4o-mini", stream=False)
    assert req == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "stream": False,
    }
    req = ollama_chat_request_to_openai(body, model="gpt-4o-mini", stream=True)
    assert req["stream"] is True
    assert req["stream_options"] == {"include_usage": True}


def test_ollama_request_to_openai_options() -> None:
    body: JSON = {
        "messages": [],
        "options": {
            "num_predict": 128,
            "temperature": 0.1,
            "top_p": 0.5,
            "seed": 7,
            "stop": ["\n\n"],
            "presence_penalty": 0.3,
            "frequency_penalty": 0.4,
            "num_ctx": 8192,
            "top_k": 40,
        },
    }
    req = ollama_chat_request_to_openai(body, model="m", stream=False)
    assert {k: v for k, v in req.items() if k not in ("model", "messages", "stream")} == {
        "max_tokens": 128,
        "temperature": 0.1,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["\n\n"],
        "presence_penalty": 0.3,
        "frequency_penalty": 0.4,
    }
    for special in (-1, -2):
        req = ollama_chat_request_to_openai(
            {"messages": [], "options": {"num_predict": special}}, model="m", stream=False
        )
        assert "max_tokens" not in req


def test_ollama_request_to_openai_format() -> None:
    req = ollama_chat_request_to_openai({"messages": [], "format": "json"}, model="m", stream=False)
    assert req["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"n": {"type": "number"}}}
    req = ollama_chat_request_to_openai({"messages": [], "format": schema}, model="m", stream=False)
    assert req["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    req = ollama_chat_request_to_openai({"messages": [], "format": ""}, model="m", stream=False)
    assert "response_format" not in req
    with pytest.raises(TranslationError, match="format"):
        ollama_chat_request_to_openai({"messages": [], "format": "yaml"}, model="m", stream=False)


def test_ollama_request_to_openai_images() -> None:
    body: JSON = {"messages": [{"role": "user", "content": "describe", "images": [PNG_B64, JPEG_B64]}]}
    req = ollama_chat_request_to_openai(body, model="m", stream=False)
    assert req["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG_B64}"}},
            ],
        }
    ]


def test_ollama_request_to_openai_tools() -> None:
    body: JSON = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_time", "arguments": {"tz": "CET"}}},
                ],
            },
            # answered out of order, matched by tool_name
            {"role": "tool", "content": "12:00", "tool_name": "get_time"},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny, noon."},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}],
            },
            {"role": "tool", "content": "rain", "tool_name": "get_weather"},
        ],
        "tools": [WEATHER_TOOL],
    }
    req = ollama_chat_request_to_openai(body, model="m", stream=False)
    msgs = req["messages"]
    assert req["tools"] == [WEATHER_TOOL]
    assert msgs[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
            },
        ],
    }
    assert msgs[2] == {"role": "tool", "content": "12:00", "tool_call_id": "call_1"}
    assert msgs[3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_0"}
    assert msgs[5]["tool_calls"][0]["id"] == "call_2"
    assert msgs[6] == {"role": "tool", "content": "rain", "tool_call_id": "call_2"}
    assert orjson.loads(msgs[5]["tool_calls"][0]["function"]["arguments"]) == {"city": "Rome"}


def test_ollama_request_to_openai_keeps_explicit_tool_call_ids() -> None:
    body: JSON = {
        "messages": [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "tc_1", "function": {"name": "f", "arguments": {}}},
                    {"function": {"name": "g", "arguments": {}}},
                ],
            },
            {"role": "tool", "content": "a", "tool_call_id": "tc_1"},
            {"role": "tool", "content": "b"},
        ]
    }
    msgs = ollama_chat_request_to_openai(body, model="m", stream=False)["messages"]
    assert [c["id"] for c in msgs[0]["tool_calls"]] == ["tc_1", "call_0"]
    assert [m["tool_call_id"] for m in msgs[1:]] == ["tc_1", "call_0"]


def test_chat_request_round_trip_openai_ollama_openai() -> None:
    original: JSON = {
        "model": "x",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": "cold"},
        ],
        "tools": [WEATHER_TOOL],
        "max_tokens": 10,
        "temperature": 0.5,
        "seed": 1,
        "stop": ["x"],
        "response_format": {"type": "json_object"},
    }
    there = openai_chat_request_to_ollama(original, model="llama")
    back = ollama_chat_request_to_openai(there, model="x", stream=False)
    assert back == {**original, "stream": False}


# --------------------------------------------------------------------------------------------------
# non-streamed responses
# --------------------------------------------------------------------------------------------------

OLLAMA_DONE: JSON = {
    "model": "llama3.2",
    "created_at": "2026-11-21T22:00:00.000000Z",
    "message": {"role": "assistant", "content": "Hello!"},
    "done": True,
    "done_reason": "stop",
    "total_duration": 5,
    "load_duration": 1,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 2,
    "eval_count": 3,
    "eval_duration": 2,
}


def test_ollama_response_to_openai() -> None:
    out = ollama_chat_response_to_openai(OLLAMA_DONE, model="alias", request_id="r1", created=1700000000)
    assert out == {
        "id": "chatcmpl-r1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "alias",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    ChatCompletion.model_validate(out)


def test_ollama_response_to_openai_length_and_missing_counts() -> None:
    resp = {"message": {"role": "assistant", "content": "trunc"}, "done": True, "done_reason": "length"}
    out = ollama_chat_response_to_openai(resp, model="m", request_id="r", created=1)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    resp = {"message": {"role": "assistant", "content": "x"}, "done": True, "done_reason": "unload"}
    assert (
        ollama_chat_response_to_openai(resp, model="m", request_id="r", created=1)["choices"][0]["finish_reason"]
        == "stop"
    )


def test_ollama_response_to_openai_tool_calls() -> None:
    resp = {
        **OLLAMA_DONE,
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
    }
    out = ollama_chat_response_to_openai(resp, model="m", request_id="abc", created=1)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    ChatCompletion.model_validate(out)


def test_openai_response_to_ollama() -> None:
    resp: JSON = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    out = openai_chat_response_to_ollama(resp, model="alias")
    assert RFC3339.match(out.pop("created_at"))
    assert out == {
        "model": "alias",
        "message": {"role": "assistant", "content": "Hi"},
        "done": True,
        "done_reason": "stop",
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": 9,
        "prompt_eval_duration": 0,
        "eval_count": 2,
        "eval_duration": 0,
    }
    ollama.ChatResponse.model_validate({**out, "created_at": rfc3339_now()})


def test_openai_response_to_ollama_no_usage_length_and_tools() -> None:
    resp: JSON = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                        }
                    ],
                },
            }
        ],
        "usage": None,
    }
    out = openai_chat_response_to_ollama(resp, model="m")
    assert out["done_reason"] == "length"
    assert "prompt_eval_count" not in out
    assert "eval_count" not in out
    assert out["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}],
    }
    ollama.ChatResponse.model_validate(out)


def test_openai_response_to_ollama_invalid_tool_arguments() -> None:
    resp: JSON = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}],
                },
            }
        ]
    }
    with pytest.raises(UpstreamStreamError, match="not valid JSON"):
        openai_chat_response_to_ollama(resp, model="m")


def test_response_round_trip_ollama_openai_ollama() -> None:
    openai_resp = ollama_chat_response_to_openai(OLLAMA_DONE, model="m", request_id="r", created=1)
    back = openai_chat_response_to_ollama(openai_resp, model="llama3.2")
    assert back["message"] == OLLAMA_DONE["message"]
    assert (back["prompt_eval_count"], back["eval_count"], back["done_reason"]) == (12, 3, "stop")


# --------------------------------------------------------------------------------------------------
# streaming: Ollama -> OpenAI
# --------------------------------------------------------------------------------------------------


def _ollama_event(content: str, **extra: Any) -> JSON:
    return {
        "model": "llama",
        "created_at": "2026-11-21T22:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": False,
        **extra,
    }


def _ollama_final(**extra: Any) -> JSON:
    return {
        "model": "llama",
        "created_at": "2026-11-21T22:00:01Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 10,
        "load_duration": 1,
        "prompt_eval_count": 20,
        "prompt_eval_duration": 2,
        "eval_count": 2,
        "eval_duration": 3,
        **extra,
    }


def test_ollama_to_openai_stream_with_usage() -> None:
    s = OllamaToOpenAIStream(model="alias", request_id="rid", created=123, include_usage=True)
    assert s.usage is None
    chunks = s.feed(_ollama_event("Hel"))
    chunks += s.feed(_ollama_event(""))
    chunks += s.feed(_ollama_event("lo"))
    assert s.usage is None
    assert not s.done
    chunks += s.feed(_ollama_final())
    assert s.done
    assert s.usage == (20, 2)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        assert c["id"] == "chatcmpl-rid"
        assert c["object"] == "chat.completion.chunk"
        assert c["created"] == 123
        assert c["model"] == "alias"
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
        None,
    ]
    assert [c["choices"][0]["finish_reason"] if c["choices"] else None for c in chunks] == [
        None,
        None,
        None,
        "stop",
        None,
    ]
    assert [c["usage"] for c in chunks[:-1]] == [None] * 4
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}
    # anything after done is ignored
    assert s.feed(_ollama_event("late")) == []


def test_ollama_to_openai_stream_without_usage() -> None:
    s = OllamaToOpenAIStream(model="m", request_id="r", created=1, include_usage=False)
    chunks = s.feed(_ollama_event("a")) + s.feed(_ollama_final(done_reason="length"))
    assert all("usage" not in c for c in chunks)
    assert len(chunks) == 3
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]
    assert s.usage == (20, 2)  # still known to the gateway for accounting


def test_ollama_to_openai_stream_no_counts_no_usage_chunk() -> None:
    s = OllamaToOpenAIStream(model="m", request_id="r", created=1, include_usage=True)
    final = {
        "model": "m",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
    }
    chunks = s.feed(final)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "stop"]
    assert s.usage is None


def test_ollama_to_openai_stream_content_in_final_event() -> None:
    s = OllamaToOpenAIStream(model="m", request_id="r", created=1, include_usage=False)
    chunks = s.feed({**_ollama_final(), "message": {"role": "assistant", "content": "all at once"}})
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "all at once"},
        {},
    ]


def test_ollama_to_openai_stream_tool_calls() -> None:
    s = OllamaToOpenAIStream(model="m", request_id="r9", created=1, include_usage=True)
    chunks = s.feed(
        {
            "model": "m",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
                ],
            },
            "done": False,
        }
    )
    chunks += s.feed(_ollama_final())
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[1]["choices"][0]["delta"] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_r9_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "index": 1,
                "id": "call_r9_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            },
        ]
    }
    assert chunks[2]["choices"][0]["finish_reason"] == "tool_calls"


def test_ollama_to_openai_stream_error_event() -> None:
    s = OllamaToOpenAIStream(model="m", request_id="r", created=1, include_usage=True)
    s.feed(_ollama_event("a"))
    with pytest.raises(UpstreamStreamError, match="model ran out of memory"):
        s.feed({"error": "model ran out of memory"})


# --------------------------------------------------------------------------------------------------
# streaming: OpenAI -> Ollama
# --------------------------------------------------------------------------------------------------


def _oa_chunk(delta: JSON, finish: str | None = None, usage: Any = "absent") -> JSON:
    chunk: JSON = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage != "absent":
        chunk["usage"] = usage
    return chunk


def _oa_usage_chunk(prompt: int, completion: int) -> JSON:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def test_openai_to_ollama_stream_with_usage() -> None:
    s = OpenAIToOllamaStream(model="alias")
    out = s.feed(_oa_chunk({"role": "assistant", "content": ""}, usage=None))
    out += s.feed(_oa_chunk({"content": "Hel"}, usage=None))
    out += s.feed(_oa_chunk({"content": "lo"}, usage=None))
    out += s.feed(_oa_chunk({}, "stop", usage=None))
    assert s.usage is None
    out += s.feed(_oa_usage_chunk(7, 2))
    assert s.usage == (7, 2)
    assert all(o["done"] is False for o in out)
    assert [o["message"] for o in out] == [
        {"role": "assistant", "content": "Hel"},
        {"role": "assistant", "content": "lo"},
    ]
    assert all(o["model"] == "alias" and RFC3339.match(o["created_at"]) for o in out)
    final = s.finish()
    assert len(final) == 1
    last = final[0]
    assert RFC3339.match(last.pop("created_at"))
    assert last == {
        "model": "alias",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": 7,
        "prompt_eval_duration": 0,
        "eval_count": 2,
        "eval_duration": 0,
    }
    for o in [*out, final[0]]:
        ollama.ChatResponse.model_validate({**o, "created_at": rfc3339_now()})


def test_openai_to_ollama_stream_without_usage_and_length() -> None:
    s = OpenAIToOllamaStream(model="m")
    s.feed(_oa_chunk({"content": "x"}))
    s.feed(_oa_chunk({}, "length"))
    assert s.finish_reason == "length"
    (last,) = s.finish()
    assert last["done"] is True
    assert last["done_reason"] == "length"
    assert "prompt_eval_count" not in last
    assert "eval_count" not in last
    assert s.usage is None


def test_openai_to_ollama_stream_tool_call_fragments() -> None:
    s = OpenAIToOllamaStream(model="m")
    out = s.feed(
        _oa_chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            }
        )
    )
    out += s.feed(_oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}))
    out += s.feed(_oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Pa'}}]}))
    out += s.feed(
        _oa_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    }
                ]
            }
        )
    )
    out += s.feed(_oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}))
    assert out == []  # nothing until the calls are complete
    out = s.feed(_oa_chunk({}, "tool_calls"))
    assert len(out) == 1
    assert out[0]["done"] is False
    assert out[0]["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_time", "arguments": {}}},
        ],
    }
    s.feed(_oa_usage_chunk(30, 12))
    (last,) = s.finish()  # nothing pending any more
    assert last["done"] is True
    assert last["done_reason"] == "stop"
    assert (last["prompt_eval_count"], last["eval_count"]) == (30, 12)


def test_openai_to_ollama_stream_pending_tool_calls_flushed_at_finish() -> None:
    s = OpenAIToOllamaStream(model="m")
    s.feed(
        _oa_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":'},
                    }
                ]
            }
        )
    )
    s.feed(_oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))
    out = s.finish()
    assert [o["done"] for o in out] == [False, True]
    assert out[0]["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 1}}}]


def test_openai_to_ollama_stream_invalid_tool_arguments() -> None:
    s = OpenAIToOllamaStream(model="m")
    s.feed(
        _oa_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":'},
                    }
                ]
            }
        )
    )
    with pytest.raises(UpstreamStreamError, match="not valid JSON"):
        s.feed(_oa_chunk({}, "length"))


def test_openai_to_ollama_stream_error_chunk() -> None:
    s = OpenAIToOllamaStream(model="m")
    with pytest.raises(UpstreamStreamError, match="Rate limit reached"):
        s.feed({"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": None}})
    with pytest.raises(UpstreamStreamError, match="boom"):
        s.feed({"error": "boom"})


def test_stream_round_trip_ollama_openai_ollama() -> None:
    events = [_ollama_event("The "), _ollama_event("answer"), _ollama_event(" is 42."), _ollama_final()]
    to_openai = OllamaToOpenAIStream(model="m", request_id="r", created=1, include_usage=True)
    to_ollama = OpenAIToOllamaStream(model="llama")
    back: list[JSON] = []
    for e in events:
        for chunk in to_openai.feed(e):
            back += to_ollama.feed(orjson.loads(orjson.dumps(chunk)))
    back += to_ollama.finish()
    assert "".join(b["message"]["content"] for b in back) == "The answer is 42."
    assert back[-1]["done"] is True
    assert (back[-1]["prompt_eval_count"], back[-1]["eval_count"]) == (20, 2)
    assert to_ollama.usage == to_openai.usage == (20, 2)


def test_stream_round_trip_tool_calls_openai_ollama_openai() -> None:
    to_ollama = OpenAIToOllamaStream(model="llama")
    to_openai = OllamaToOpenAIStream(model="gpt", request_id="z", created=1, include_usage=False)
    chunks = [
        _oa_chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ],
            }
        ),
        _oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": [1, 2]}'}}]}),
        _oa_chunk({}, "tool_calls"),
    ]
    out: list[JSON] = []
    for c in chunks:
        for event in to_ollama.feed(c):
            out += to_openai.feed(event)
    for event in to_ollama.finish():
        out += to_openai.feed(event)
    tool_deltas = [d for c in out for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert len(tool_deltas) == 1
    assert tool_deltas[0]["function"]["name"] == "f"
    assert orjson.loads(tool_deltas[0]["function"]["arguments"]) == {"x": [1, 2]}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


# --------------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------------


def test_openai_embed_request_to_ollama() -> None:
    assert openai_embed_request_to_ollama({"model": "a", "input": "hello"}, model="nomic") == {
        "model": "nomic",
        "input": "hello",
    }
    assert openai_embed_request_to_ollama(
        {"model": "a", "input": ["a", "b"], "dimensions": 256, "encoding_format": "base64", "user": "u"},
        model="nomic",
    ) == {"model": "nomic", "input": ["a", "b"], "dimensions": 256}


@pytest.mark.parametrize("bad", [[1, 2, 3], [[1, 2], [3]], None, 5, ["a", 1]])
def test_openai_embed_request_to_ollama_rejects_non_text(bad: Any) -> None:
    with pytest.raises(TranslationError):
        openai_embed_request_to_ollama({"input": bad}, model="m")


def test_openai_embed_request_token_arrays_message() -> None:
    with pytest.raises(TranslationError, match="token"):
        openai_embed_request_to_ollama({"input": [[1, 2], [3]]}, model="m")
    with pytest.raises(TranslationError, match="encoding_format"):
        openai_embed_request_to_ollama({"input": "x", "encoding_format": "int8"}, model="m")


def test_ollama_embed_response_to_openai() -> None:
    resp = {
        "model": "nomic",
        "embeddings": [[0.1, 0.2], [0.3, 0.4]],
        "total_duration": 1,
        "prompt_eval_count": 6,
    }
    out = ollama_embed_response_to_openai(resp, model="alias")
    assert out == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
            {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
        ],
        "model": "alias",
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }
    CreateEmbeddingResponse.model_validate(out)
    no_count = ollama_embed_response_to_openai({"embeddings": [[1.0]]}, model="m")
    assert no_count["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


def test_ollama_embed_response_to_openai_base64() -> None:
    # the official OpenAI SDK asks for base64 by default and decodes float32 little-endian
    vec = [0.5, -1.25, 3.0]
    out = ollama_embed_response_to_openai({"embeddings": [vec]}, model="m", encoding_format="base64")
    encoded = out["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert array("f", base64.b64decode(encoded)).tolist() == vec
    # and the reverse direction decodes base64 vectors if an upstream sends them
    back = openai_embed_response_to_ollama(out, model="m")
    assert back["embeddings"] == [vec]


def test_ollama_embed_request_to_openai() -> None:
    assert ollama_embed_request_to_openai(
        {"model": "a", "input": ["x", "y"], "truncate": True, "keep_alive": "1m"}, model="te3"
    ) == {"model": "te3", "input": ["x", "y"]}
    assert ollama_embed_request_to_openai({"model": "a", "input": "x", "dimensions": 64}, model="te3") == {
        "model": "te3",
        "input": "x",
        "dimensions": 64,
    }
    assert ollama_embed_request_to_openai({"model": "a", "prompt": "legacy"}, model="te3") == {
        "model": "te3",
        "input": "legacy",
    }
    with pytest.raises(TranslationError):
        ollama_embed_request_to_openai({"model": "a"}, model="te3")
    with pytest.raises(TranslationError):
        ollama_embed_request_to_openai({"input": [1, 2]}, model="te3")


def test_openai_embed_response_to_ollama() -> None:
    resp = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.3]},
            {"object": "embedding", "index": 0, "embedding": [0.1]},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    out = openai_embed_response_to_ollama(resp, model="alias")
    assert out == {"model": "alias", "embeddings": [[0.1], [0.3]], "prompt_eval_count": 4}
    ollama.EmbedResponse.model_validate(out)
    assert "prompt_eval_count" not in openai_embed_response_to_ollama({"data": []}, model="m")


def test_embed_round_trip() -> None:
    req = ollama_embed_request_to_openai(
        openai_embed_request_to_ollama({"input": ["a", "b"], "dimensions": 3}, model="o"), model="x"
    )
    assert req == {"model": "x", "input": ["a", "b"], "dimensions": 3}
    resp = {"model": "o", "embeddings": [[1.0, 2.0], [3.0, 4.0]], "prompt_eval_count": 2}
    back = openai_embed_response_to_ollama(ollama_embed_response_to_openai(resp, model="x"), model="o")
    assert back == resp


# --------------------------------------------------------------------------------------------------
# usage extraction
# --------------------------------------------------------------------------------------------------


def test_usage_from_openai() -> None:
    assert usage_from_openai({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}) == (3, 4, 0)
    assert usage_from_openai({"usage": {"prompt_tokens": 3, "total_tokens": 3}}) == (3, 0, 0)  # embeddings
    # The part of the prompt read from a prompt cache (it costs the cached-input price).
    cached = {"prompt_tokens": 30, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 20}}
    assert usage_from_openai({"usage": cached}) == (30, 4, 20)
    assert usage_from_openai({"usage": {**cached, "prompt_tokens_details": None}}) == (30, 4, 0)
    assert usage_from_openai({"usage": None}) is None
    assert usage_from_openai({"choices": []}) is None


def test_usage_from_ollama() -> None:
    assert usage_from_ollama(_ollama_final()) == (20, 2)
    assert usage_from_ollama(_ollama_event("x")) is None
    assert usage_from_ollama({"done": True, "eval_count": 5}) == (0, 5)
    assert usage_from_ollama({"done": True}) is None
    # /api/embed responses have no "done" key but do report prompt_eval_count
    assert usage_from_ollama({"embeddings": [[1.0]], "prompt_eval_count": 8}) == (8, 0)
