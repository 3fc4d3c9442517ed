"""The gateway's request schemas: what they admit, what they refuse (a 400 naming the field, in the codes the API
has always used), and that what they publish says the same."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.errors import BadRequest
from gatehouse.gateway.schemas import anthropic, ollama, openai
from gatehouse.gateway.schemas.base import MAX_ITEMS, Checker
from gatehouse.gateway.schemas.openapi import inline

HI = [{"role": "user", "content": "hi"}]

ACCEPTED: list[tuple[Checker, dict[str, Any]]] = [
    (openai.check_chat, {"model": "m", "messages": HI, "temperature": 2, "top_p": 0.5, "max_tokens": 16.0}),
    (
        openai.check_chat,
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            "stream": True,
            "stream_options": {"include_usage": True},
            "a_field_openai_adds_later": {"anything": [1]},
        },
    ),
    (openai.check_completions, {"model": "m", "prompt": [1, 2, 3], "echo": True}),
    (openai.check_responses, {"model": "m", "previous_response_id": "resp_1", "input": [{"role": "user"}]}),
    (openai.check_embeddings, {"model": "m", "input": [[1, 2], [3]], "dimensions": 8, "encoding_format": "base64"}),
    (
        anthropic.check_messages,
        {
            "model": "m",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]},
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "w"}],
            "tool_choice": {"type": "any"},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
        },
    ),
    (anthropic.check_count_tokens, {"model": "m", "messages": HI}),
    (
        ollama.check_chat,
        {"model": "m", "messages": HI, "options": {"num_predict": -1}, "format": "json", "think": "low"},
    ),
    (ollama.check_generate, {"model": "m", "prompt": "hi", "images": ["AA"], "keep_alive": "5m"}),
    (ollama.check_embed, {"model": "m", "input": ["a", "b"], "truncate": True}),
    (ollama.check_show, {"name": "m"}),
]


@pytest.mark.parametrize(("check", "body"), ACCEPTED)
def test_documented_bodies_are_accepted(check: Checker, body: dict[str, Any]) -> None:
    check(body)


REFUSED: list[tuple[Checker, dict[str, Any], str, str]] = [
    (openai.check_chat, {"messages": HI}, "missing_field", "model"),
    (openai.check_chat, {"model": " ", "messages": HI}, "invalid_field", "model"),
    (openai.check_chat, {"model": "m", "messages": HI, "temperature": 2.5}, "invalid_field", "temperature"),
    (openai.check_chat, {"model": "m", "messages": HI, "max_tokens": "16"}, "invalid_field", "max_tokens"),
    (openai.check_chat, {"model": "m", "messages": HI, "max_tokens": 16.5}, "invalid_field", "max_tokens"),
    (openai.check_chat, {"model": "m", "messages": HI, "stream": 1}, "invalid_field", "stream"),
    (openai.check_chat, {"model": "m", "messages": HI, "tools": None}, "invalid_field", "tools"),
    (
        openai.check_chat,
        {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
        "invalid_message",
        "messages.0",
    ),
    (
        openai.check_chat,
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "invalid_message",
        "messages.0.content.0.text",
    ),
    (
        openai.check_chat,
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
        "invalid_message",
        "messages.0.content.0",
    ),
    (openai.check_completions, {"model": "m"}, "missing_field", "prompt"),
    (openai.check_embeddings, {"model": "m", "input": ["a", 1]}, "invalid_field", "input"),
    (openai.check_embeddings, {"model": "m", "input": ["a"] * 2049}, "invalid_field", "input"),
    (openai.check_responses, {"model": "m", "input": 5}, "invalid_field", "input"),
    (anthropic.check_messages, {"model": "m", "messages": HI}, "missing_field", "max_tokens"),
    (anthropic.check_messages, {"model": "m", "max_tokens": 0, "messages": HI}, "invalid_field", "max_tokens"),
    (
        anthropic.check_messages,
        {"model": "m", "max_tokens": 8, "messages": HI, "temperature": 1.5},
        "invalid_field",
        "temperature",
    ),
    (
        anthropic.check_messages,
        {"model": "m", "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]},
        "invalid_message",
        "messages.0",
    ),
    (
        anthropic.check_messages,
        {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": {}}]}]},
        "invalid_message",
        "messages.0.content.0",
    ),
    (
        ollama.check_chat,
        {"model": "m", "messages": [{"role": "user", "content": ["x"]}]},
        "invalid_message",
        "messages.0.content",
    ),
    (ollama.check_generate, {"model": "m", "format": 5}, "invalid_field", "format"),
    (ollama.check_embed, {"model": "m", "input": []}, "missing_field", "input"),  # as an empty `messages` is
]


@pytest.mark.parametrize(("check", "body", "code", "param"), REFUSED, ids=[f"{r[3]}-{r[2]}" for r in REFUSED])
def test_bad_bodies_are_refused_naming_the_field(check: Checker, body: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check(body)
    assert (refused.value.code, refused.value.param) == (code, param), refused.value.message
    assert f"`{param}`" in refused.value.message


def test_integral_numbers_become_integers_in_the_body() -> None:
    body: dict[str, Any] = {"model": "m", "messages": HI, "max_tokens": 16.0}
    openai.check_chat(body)
    assert body["max_tokens"] == 16 and type(body["max_tokens"]) is int
    options: dict[str, Any] = {"model": "m", "messages": HI, "options": {"num_predict": 8.0}}
    ollama.check_chat(options)
    assert type(options["options"]["num_predict"]) is int


def test_a_huge_array_is_refused_before_its_items_are_read() -> None:
    items = [object()] * (MAX_ITEMS + 1)  # not even messages: the count alone refuses them
    with pytest.raises(BadRequest, match=str(MAX_ITEMS)):
        openai.check_chat({"model": "m", "messages": items})


def test_the_published_schema_allows_extra_fields_and_takes_no_null_where_the_sdk_takes_none() -> None:
    chat = inline(openai.ChatCompletionRequest)
    assert chat["additionalProperties"] is True
    assert set(chat["required"]) == {"model", "messages"}
    assert chat["properties"]["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 2}
    assert chat["properties"]["tools"]["type"] == "array"  # no null: the SDK types it without Optional
    assert "$ref" not in str(chat) and "title" not in chat
    messages = inline(anthropic.MessagesRequest)
    assert messages["properties"]["max_tokens"]["minimum"] == 1
