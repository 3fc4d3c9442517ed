"""Fake LLM upstream speaking the OpenAI, Ollama and Anthropic HTTP protocols, for tests and benchmarks.

Run it as its own process::

    python tests/support/fake_upstream.py --host 127.0.0.1 --port 0 [--api-key KEY]
        [--token-delay SECONDS] [--tokens N] [--latency SECONDS]

It prints exactly one line ``READY <port>`` on stdout once it is listening and exits with status 0
on SIGTERM/SIGINT. From Python, use :func:`run_fake_upstream`.

The app is plain ASGI (no framework) served by uvicorn with uvloop + httptools, because benchmarks
use it as the upstream and it must never be the bottleneck.

Behaviour is chosen by the model name, the same for all three protocols:

* ``fake-chat`` / ``fake-embed``: normal deterministic replies / embeddings.
* ``fake-slow``: at least 0.05 s before each token.
* ``fake-error``: HTTP 500 at once.
* ``fake-hang``: never sends a response head; waits until the client goes away.
* ``fake-midfail``: sends 3 tokens (or a partial JSON body) and then drops the connection.
* ``fake-nousage``: like ``fake-chat`` but never reports token usage (an Anthropic answer then has no
  ``usage`` at all, which Anthropic itself never does).
* ``fake-long``: 200 tokens, at least 0.01 s apart.
* ``fake-floats``: an embedding model that answers floats even when asked for base64, as some servers do.

Endpoints: ``GET /v1/models[/{id}]``, ``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``POST /v1/messages``, ``POST /v1/messages/count_tokens``, ``GET /api/tags``, ``GET /api/version``,
``POST /api/show``, ``POST /api/chat``, ``POST /api/generate``, ``POST /api/embed``,
``POST /api/embeddings`` and ``GET /`` ("Ollama is running").

With ``--api-key KEY`` every /v1 and /api request needs ``Authorization: Bearer KEY`` or
``x-api-key: KEY``.

Anthropic's Messages API (shapes from the official ``anthropic`` package's types):

* ``POST /v1/messages`` checks the request as Anthropic does (``max_tokens`` required; ``system`` a
  string or text blocks; content a string or text, image, document, tool_use and tool_result blocks;
  every tool_use answered by a tool_result in the next message, and no other) and answers a Message,
  or with ``"stream": true`` the documented events: ``message_start``, ``content_block_start``,
  ``ping``, ``content_block_delta`` (``text_delta``, ``input_json_delta``), ``content_block_stop``,
  ``message_delta``, ``message_stop``. ``stop_reason`` is ``end_turn``, ``max_tokens``,
  ``stop_sequence`` (a text reply is cut before the first of ``stop_sequences`` it contains) or
  ``tool_use``. A message id is ``msg_...``; usage carries zero cache counts, ``message_start`` one
  output token, ``message_delta`` the final totals.
* Tool calls: when the request has ``tools``, ``tool_choice`` is not ``none`` and the last message is a
  user turn without tool_result blocks, the model calls a tool if ``tool_choice`` says ``any`` or
  ``tool``, or if the last user text names a tool or says "tool"/"tools": the named tool, else the
  first one. The answer is 2 words of text then a tool_use block (id ``toolu_...``, input from
  :func:`tool_call_input`), stop_reason ``tool_use``; streamed, the input arrives as an empty
  ``input_json_delta`` then pieces of 1 to 8 characters cut anywhere. Each piece and each word is
  one output token. A call that does not fit in ``max_tokens`` is not made: the answer is
  ``max_tokens`` words, stop_reason ``max_tokens``. A last user turn carrying tool_result blocks is
  answered with text.
* Prompt tokens are counted as for the other protocols (:func:`prompt_token_count` over
  :func:`anthropic_chat_messages`: the system prompt is one message; text blocks and tool_result
  text count, images and tool_use inputs do not); ``POST /v1/messages/count_tokens`` answers that
  number as ``{"input_tokens": N}``.
* Errors are ``{"type": "error", "error": {"type", "message"}}``: 400 invalid_request_error,
  401 authentication_error, 404 not_found_error, 500 api_error, 529 overloaded_error.
* ``GET /v1/models[/{id}]`` answers Anthropic's shape (``type: model``, ``display_name``,
  ``created_at``, ``lifecycle: active``, ``max_input_tokens`` 4096, ``max_tokens`` 1024 (advertised,
  not enforced); ``has_more``, ``first_id``, ``last_id``; ``limit``, ``after_id`` and ``before_id``
  pages) when the request carries ``anthropic-version`` or ``x-api-key``, OpenAI's otherwise.

Control endpoints (never authenticated): ``GET /_stats``, ``GET /_requests``, ``POST /_reset``, and
``POST /_fail/{ok|error|overloaded|hang}``, which makes every /v1 and /api request (model lists
included) answer normally, answer 500, answer 529, or never answer, until changed.
``--token-delay`` paces streamed tokens; a non-streamed reply waits the same total time before it is
sent. ``--latency`` delays the start of chat/generate/messages/embedding responses.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
import orjson

__all__ = [
    "DEFAULT_TOKENS",
    "EMBEDDING_DIM",
    "MODELS",
    "WORDS",
    "FakeUpstream",
    "FakeUpstreamApp",
    "anthropic_chat_messages",
    "fake_embedding",
    "last_user_text",
    "main",
    "prompt_token_count",
    "reply_text",
    "reply_tokens",
    "run_fake_upstream",
    "tool_call_input",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_TOKENS = 8
EMBEDDING_DIM = 8
REQUEST_LOG_SIZE = 100
# OpenAI-style "created" timestamps for the model list are fixed so responses are byte-stable.
MODEL_CREATED = 1_700_000_000

# 64 words so a token index is just the low 6 bits of the PRNG state.
WORDS: tuple[str, ...] = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "amber", "basil", "cedar", "dune", "ember", "fern",
    "granite", "harbor", "iris", "jasper", "kelp", "lumen", "maple", "nectar",
    "onyx", "pebble", "quartz", "river", "slate", "thistle", "umber", "violet",
    "willow", "yarrow", "zephyr", "acorn", "birch", "clover", "dahlia", "elm",
    "flint", "grove", "heron", "ivy", "juniper", "kestrel", "lark", "moss",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How one fake model behaves."""

    name: str
    token_delay: float = 0.0  # minimum delay before each token; --token-delay wins if larger
    tokens: int | None = None  # completion length; None means --tokens
    behaviour: str = "normal"  # normal | error | hang | midfail
    usage: bool = True


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("fake-chat"),
        ModelSpec("fake-embed"),
        ModelSpec("fake-slow", token_delay=0.05),
        ModelSpec("fake-error", behaviour="error"),
        ModelSpec("fake-hang", behaviour="hang"),
        ModelSpec("fake-midfail", behaviour="midfail"),
        ModelSpec("fake-nousage", usage=False),
        ModelSpec("fake-long", token_delay=0.01, tokens=200),
        ModelSpec("fake-floats", behaviour="floats"),
    )
}
MIDFAIL_TOKENS = 3


# --------------------------------------------------------------------------------------------------
# Deterministic content. Public so other tests can predict exactly what the upstream will answer.
# --------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def prompt_token_count(messages: Sequence[Any]) -> int:
    """Fake prompt token count: whitespace-separated words of all message contents + 4 per message."""
    total = 0
    for msg in messages:
        if isinstance(msg, dict):
            total += len(_content_text(msg.get("content")).split())
        total += 4
    return total


def last_user_text(messages: Sequence[Any]) -> str:
    """Text of the last message whose role is "user" ("" if there is none)."""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return ""


@lru_cache(maxsize=4096)
def reply_tokens(text: str, n: int) -> tuple[str, ...]:
    """The n reply tokens ("word ") the fake model produces for a last user message `text`."""
    # crc32-seeded LCG: cheap, stable across processes (unlike hash()), and cached for benchmarks.
    state = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    out = []
    for _ in range(max(n, 0)):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(WORDS[(state >> 16) & 63] + " ")
    return tuple(out)


def reply_text(messages: Sequence[Any], n: int = DEFAULT_TOKENS) -> str:
    """Full reply content the fake model produces for `messages` with n tokens."""
    return "".join(reply_tokens(last_user_text(messages), n))


_EMBED_STRUCT = struct.Struct(f"<{EMBEDDING_DIM}H")
_EMBED_F32 = struct.Struct(f"<{EMBEDDING_DIM}f")


@lru_cache(maxsize=4096)
def _embedding(text: str) -> tuple[float, ...]:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=2 * EMBEDDING_DIM).digest()
    # Map each 16-bit chunk into [-1, 1]; rounded so the float32 base64 form round-trips closely.
    return tuple(round(v / 32767.5 - 1.0, 6) for v in _EMBED_STRUCT.unpack(digest))


def fake_embedding(text: str) -> list[float]:
    """Deterministic EMBEDDING_DIM-float embedding of `text`."""
    return list(_embedding(text))


def _embed_inputs(raw: Any) -> list[tuple[str, int]] | None:
    """Normalise an embeddings `input` to (text, token count) pairs; None if malformed."""
    if isinstance(raw, str):
        return [(raw, len(raw.split()))]
    if not isinstance(raw, list):
        return None
    if raw and all(isinstance(x, int) for x in raw):  # a single token array
        return [(" ".join(map(str, raw)), len(raw))]
    out: list[tuple[str, int]] = []
    for item in raw:
        if isinstance(item, str):
            out.append((item, len(item.split())))
        elif isinstance(item, list) and all(isinstance(x, int) for x in item):
            out.append((" ".join(map(str, item)), len(item)))
        else:
            return None
    return out


# --------------------------------------------------------------------------------------------------
# Anthropic Messages: the request checked as Anthropic checks it, and what the fake model makes of it.
# --------------------------------------------------------------------------------------------------

TOOL_PREAMBLE_TOKENS = 2  # words of text before a tool_use block, as Claude usually says something first
ANTHROPIC_MAX_INPUT_TOKENS = 4096  # the context length /api/show reports too
ANTHROPIC_MAX_TOKENS = 1024
_MODEL_CREATED_AT = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MODEL_CREATED))
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
# The HTTP status Anthropic gives each error type it names.
_ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "not_found_error": 404,
    "api_error": 500,
    "overloaded_error": 529,
}

_Proto = Literal["openai", "ollama", "anthropic"]


class _InvalidRequestError(Exception):
    """A request Anthropic would refuse with 400 invalid_request_error; the message says where."""


def _block_text(block: Mapping[str, Any]) -> str:
    """What a content block adds to the prompt's text: a text block's text, a tool result's text."""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        return _content_text(block.get("content"))
    return ""


def anthropic_chat_messages(system: Any, messages: Sequence[Any]) -> list[dict[str, str]]:
    """Chat-style view of an Anthropic request, which the fake counts and answers like an OpenAI chat.

    The system prompt (a string or text blocks) is a first "system" message; each message keeps its
    role and the text of its text blocks and tool results.
    """
    chat = [{"role": "system", "content": _content_text(system)}] if system else []
    for msg in messages:
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if isinstance(content, list):
            text = " ".join(t for t in (_block_text(b) for b in content if isinstance(b, Mapping)) if t)
        else:
            text = content if isinstance(content, str) else ""
        chat.append({"role": str(msg.get("role")) if isinstance(msg, Mapping) else "", "content": text})
    return chat


def tool_call_input(tool: Mapping[str, Any], text: str) -> dict[str, Any]:
    """The input the fake model gives `tool` when the last user message is `text`.

    One value per property of the tool's input_schema: the first enum value, else by type a
    number derived from the property name, true, {}, null, [text], or (strings and the rest) `text`.
    """
    schema = tool.get("input_schema")
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    out: dict[str, Any] = {}
    for name, prop in (props if isinstance(props, Mapping) else {}).items():
        spec = prop if isinstance(prop, Mapping) else {}
        kind = spec.get("type")
        seed = zlib.crc32(str(name).encode())
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            out[name] = spec["enum"][0]
        elif kind == "integer":
            out[name] = seed % 100
        elif kind == "number":
            out[name] = seed % 1000 / 10
        elif kind == "boolean":
            out[name] = True
        elif kind == "object":
            out[name] = {}
        elif kind == "null":
            out[name] = None
        elif kind == "array":
            out[name] = [text]
        else:
            out[name] = text
    return out


def _json_pieces(raw: str) -> tuple[str, ...]:
    """`raw` cut into pieces of 1 to 8 characters, anywhere (inside strings and escapes too)."""
    state = zlib.crc32(raw.encode("utf-8", "surrogatepass"))
    pieces = []
    i = 0
    while i < len(raw):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + (state >> 16) % 8
        pieces.append(raw[i : i + size])
        i += size
    return tuple(pieces)


def _cut_at_stop(tokens: tuple[str, ...], stops: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """The tokens up to the first stop sequence in their text (left out), and that sequence."""
    text = "".join(tokens)
    found = min(((text.find(s), i) for i, s in enumerate(stops) if s and s in text), default=None)
    if found is None:
        return tokens, None
    cut, which = found
    kept: list[str] = []
    pos = 0
    for tok in tokens:
        if pos >= cut:
            break
        kept.append(tok[: cut - pos])
        pos += len(tok)
    return tuple(kept), stops[which]


@dataclass(slots=True)
class _AnthropicRequest:
    """A checked /v1/messages (or count_tokens) request."""

    model: str
    max_tokens: int
    stream: bool
    chat: list[dict[str, str]]  # anthropic_chat_messages(): what is counted and what seeds the reply
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any]
    stop_sequences: list[str]
    answers_tool: bool  # the last message is a user turn carrying tool_result blocks

    def chosen_tool(self) -> dict[str, Any] | None:
        """The tool the fake model calls now, if any (see the module docstring)."""
        choice = self.tool_choice.get("type", "auto")
        if not self.tools or choice == "none" or self.answers_tool or self.chat[-1]["role"] != "user":
            return None
        if choice == "tool":
            return next(t for t in self.tools if t.get("name") == self.tool_choice.get("name"))
        text = self.chat[-1]["content"]
        named = next((t for t in self.tools if str(t.get("name")) in text), None)
        if named is not None:
            return named
        return self.tools[0] if choice == "any" or _TOOL_WORD.search(text) else None


def _check_source(source: Any, where: str) -> None:
    if not isinstance(source, Mapping):
        raise _InvalidRequestError(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in _IMAGE_MEDIA_TYPES:
            raise _InvalidRequestError(
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )
        try:
            base64.b64decode(str(source.get("data", "")), validate=True)
        except ValueError:
            raise _InvalidRequestError(f"{where}.source.data: The image data is not valid base64") from None
    elif kind == "url":
        if not isinstance(source.get("url"), str):
            raise _InvalidRequestError(f"{where}.source.url: Field required")
    elif kind != "file":
        raise _InvalidRequestError(f"{where}.source.type: Input should be 'base64', 'url' or 'file'")


def _check_text_blocks(content: Any, where: str) -> None:
    """`content` must be a string or a list of text blocks (a system prompt, a system message)."""
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _InvalidRequestError(f"{where}: Input should be a valid string or a list of text blocks")
    for j, block in enumerate(content):
        if not isinstance(block, Mapping) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _InvalidRequestError(f"{where}.{j}: Input should be a text block")


def _check_blocks(content: Any, where: str, role: str) -> tuple[list[str], list[str]]:
    """Check one message's content; return the ids of its tool_use blocks and of its tool_result blocks."""
    if isinstance(content, str):
        return [], []
    if not isinstance(content, list) or not content:
        raise _InvalidRequestError(f"{where}: Input should be a valid string or a non-empty list of content blocks")
    uses: list[str] = []
    results: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _InvalidRequestError(f"{at}.text: Field required")
        elif kind == "image":
            _check_source(block.get("source"), at)
        elif kind == "document":
            if not isinstance(block.get("source"), Mapping):
                raise _InvalidRequestError(f"{at}.source: Field required")
        elif kind == "tool_use" and role == "assistant":
            if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
                raise _InvalidRequestError(f"{at}: tool_use blocks need an id and a name")
            if not isinstance(block.get("input"), Mapping):
                raise _InvalidRequestError(f"{at}.input: Input should be a valid dictionary")
            uses.append(block["id"])
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise _InvalidRequestError(f"{at}.tool_use_id: Field required")
            inner = block.get("content", "")
            if not isinstance(inner, str):
                if not isinstance(inner, list):
                    raise _InvalidRequestError(f"{at}.content: Input should be a valid string or list")
                for k, part in enumerate(inner):
                    part_kind = part.get("type") if isinstance(part, Mapping) else None
                    if part_kind == "image":
                        _check_source(part.get("source"), f"{at}.content.{k}")
                    elif part_kind != "text" or not isinstance(part.get("text"), str):
                        raise _InvalidRequestError(f"{at}.content.{k}: Input should be a text or image block")
            results.append(block["tool_use_id"])
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            pass
        else:
            raise _InvalidRequestError(f"{at}.type: a {role} message cannot hold a {kind!r} block")
    return uses, results


def _unanswered(index: int, tool_id: str) -> _InvalidRequestError:
    return _InvalidRequestError(
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {tool_id}. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
    )


def _parse_anthropic(body: Mapping[str, Any], *, generation: bool) -> _AnthropicRequest:
    """Check a /v1/messages body (count_tokens when not `generation`) as Anthropic does."""
    model = body.get("model")
    if not isinstance(model, str):
        raise _InvalidRequestError("model: Field required")
    max_tokens = body.get("max_tokens")
    if generation:
        if max_tokens is None:
            raise _InvalidRequestError("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _InvalidRequestError("max_tokens: Input should be an integer greater than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _InvalidRequestError("messages: Field required")
    if not messages:
        raise _InvalidRequestError("messages: at least one message is required")
    system = body.get("system")
    if system is not None:
        _check_text_blocks(system, "system")

    pending: list[str] = []  # tool_use ids the next message must answer
    answers_tool = False
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, Mapping) else None
        if role not in ("user", "assistant", "system"):
            raise _InvalidRequestError(f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'")
        if role == "system":
            _check_text_blocks(msg.get("content"), f"messages.{i}.content")
            uses: list[str] = []
            results: list[str] = []
        else:
            uses, results = _check_blocks(msg.get("content"), f"messages.{i}.content", role)
        unexpected = [r for r in results if r not in pending]
        if unexpected:
            raise _InvalidRequestError(
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {unexpected[0]}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        missing = [p for p in pending if p not in results]
        if missing:
            raise _unanswered(i - 1, missing[0])
        pending = uses
        answers_tool = bool(results)
    if pending:
        raise _unanswered(len(messages) - 1, pending[0])

    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise _InvalidRequestError("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise _InvalidRequestError(f"tools.{i}.name: Field required")
        if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"), Mapping):
            raise _InvalidRequestError(f"tools.{i}.custom.input_schema: Field required")
    tool_choice = body.get("tool_choice", {"type": "auto"})
    if not isinstance(tool_choice, Mapping) or tool_choice.get("type") not in _TOOL_CHOICES:
        raise _InvalidRequestError("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if tool_choice["type"] in ("any", "tool") and not tools:
        raise _InvalidRequestError(f"tool_choice: tool_choice.type {tool_choice['type']!r} needs tools")
    if tool_choice["type"] == "tool" and tool_choice.get("name") not in {t["name"] for t in tools}:
        raise _InvalidRequestError(f"tool_choice.name: no tool is named {tool_choice.get('name')!r}")
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _InvalidRequestError("stop_sequences: Input should be a valid list of strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _InvalidRequestError("stream: Input should be a valid boolean")
    return _AnthropicRequest(
        model=model,
        max_tokens=max_tokens if isinstance(max_tokens, int) and generation else 0,
        stream=stream,
        chat=anthropic_chat_messages(system, messages),
        tools=tools,
        tool_choice=dict(tool_choice),
        stop_sequences=stops,
        answers_tool=answers_tool,
    )


def _anthropic_error(type_: str, message: str) -> tuple[int, bytes]:
    """Anthropic's error body for `type_`, with the HTTP status Anthropic gives it."""
    return _ANTHROPIC_STATUS[type_], orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})


def _speaks_anthropic(scope: Scope) -> bool:
    """Whether a /v1 request comes from an Anthropic client (its paths, or the headers its SDKs send)."""
    if scope["path"].startswith("/v1/messages"):
        return True
    return any(name in (b"anthropic-version", b"x-api-key") for name, _ in scope["headers"])


def _sse_event(name: bytes, data: Mapping[str, Any]) -> bytes:
    """One server-sent event with its `event:` line, as Anthropic streams them."""
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --------------------------------------------------------------------------------------------------
# ASGI app
# --------------------------------------------------------------------------------------------------

_JSON = b"application/json"
_HDR_JSON = (b"content-type", _JSON)
_HDR_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_HDR_JSON_TRUNCATED = [_HDR_JSON, (b"content-length", b"4096")]
_HDR_NDJSON = [(b"content-type", b"application/x-ndjson")]
_SSE_DONE = b"data: [DONE]\n\n"
_SSE_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


class _AbortConnectionError(Exception):
    """Raised on purpose so uvicorn drops the connection mid-body (fake-midfail)."""


class _QuietExpectedErrors(logging.Filter):
    """Hide uvicorn's traceback logs for deliberate aborts and shutdown cancellations."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _AbortConnectionError | asyncio.CancelledError):
            return False
        # fake-hang requests are expected to outlive the shutdown grace period.
        return not str(record.msg).startswith("Cancel %s running task(s)")


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _ClientWatch:
    """Notices the client going away while we sleep between tokens.

    uvicorn's httptools `send` silently drops writes after a disconnect instead of raising, so the
    only reliable signal is `receive()` returning http.disconnect; a background task waits on it.
    It also completes when our response completes, so only consult `gone` before the final send.
    """

    __slots__ = ("_task",)

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.ensure_future(_wait_disconnect(receive))

    @property
    def gone(self) -> bool:
        return self._task.done()

    async def pause(self, delay: float) -> None:
        """Sleep for `delay` seconds, waking early if the client disconnects."""
        if delay > 0 and not self._task.done():
            await asyncio.wait((self._task,), timeout=delay)

    def close(self) -> None:
        self._task.cancel()


@dataclass(slots=True)
class _Stats:
    requests: int = 0
    chat_requests: int = 0
    embed_requests: int = 0
    completion_tokens_served: int = 0
    prompt_tokens: int = 0
    disconnects: int = 0
    aborted: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "chat_requests": self.chat_requests,
            "embed_requests": self.embed_requests,
            "completion_tokens_served": self.completion_tokens_served,
            "prompt_tokens": self.prompt_tokens,
            "disconnects": self.disconnects,
            "aborted": self.aborted,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    def reset(self) -> None:
        # in_flight is a live gauge, not a counter: zeroing it would go negative as requests finish.
        live = self.in_flight
        for name in self.__slots__:
            setattr(self, name, 0)
        self.in_flight = self.max_in_flight = live


@dataclass(slots=True)
class _Plan:
    """What a generation request will produce."""

    spec: ModelSpec
    tokens: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int
    delay: float  # per-token delay


def _iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def _json_response(status: int, payload: bytes) -> tuple[Message, Message]:
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_HDR_JSON, (b"content-length", b"%d" % len(payload))],
        },
        {"type": "http.response.body", "body": payload},
    )


def _openai_error(message: str, type_: str, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


class FakeUpstreamApp:
    """Pure-ASGI fake LLM upstream (OpenAI, Ollama and Anthropic protocols on one port)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token_delay: float = 0.0,
        tokens: int = DEFAULT_TOKENS,
        latency: float = 0.0,
    ) -> None:
        self.auth = f"Bearer {api_key}".encode("latin-1") if api_key else None
        self.key = api_key.encode("latin-1") if api_key else None  # as Anthropic clients send it, in x-api-key
        self.token_delay = token_delay
        self.tokens = tokens
        self.latency = latency
        self.stats = _Stats()
        self.failing = "ok"  # POST /_fail/{ok|error|overloaded|hang}
        # (path, body, raw headers): headers are decoded only when /_requests asks, off the hot path.
        self.request_log: collections.deque[tuple[str, Any, list[tuple[bytes, bytes]]]] = collections.deque(
            maxlen=REQUEST_LOG_SIZE
        )
        self._ids = itertools.count(1)
        # Static responses are serialised once; they are served on every health check / benchmark.
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"} for m in MODELS],
            }
        )
        self._anthropic_models = [
            {
                "type": "model",
                "id": m,
                "display_name": m.replace("-", " ").title(),
                "created_at": _MODEL_CREATED_AT,
                "lifecycle": "active",
                "max_input_tokens": ANTHROPIC_MAX_INPUT_TOKENS,
                "max_tokens": ANTHROPIC_MAX_TOKENS,
            }
            for m in MODELS
        ]
        self._tags_body = orjson.dumps(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2024-01-01T00:00:00Z",
                        "size": 1000,
                        "digest": hashlib.sha256(m.encode()).hexdigest(),
                        "details": {
                            "format": "gguf",
                            "family": "fake",
                            "families": ["fake"],
                            "parameter_size": "1B",
                            "quantization_level": "Q4_0",
                        },
                    }
                    for m in MODELS
                ]
            }
        )
        self._version_body = orjson.dumps({"version": "0.5.0"})
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._openai_chat,
            ("POST", "/v1/embeddings"): self._openai_embeddings,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/messages"): self._anthropic_messages,
            ("POST", "/v1/messages/count_tokens"): self._anthropic_count_tokens,
            ("POST", "/api/chat"): self._ollama_chat,
            ("POST", "/api/generate"): self._ollama_chat,
            ("POST", "/api/embed"): self._ollama_embed,
            ("POST", "/api/embeddings"): self._ollama_embed,
            ("GET", "/api/tags"): self._static(self._tags_body),
            ("GET", "/api/version"): self._static(self._version_body),
            ("POST", "/api/show"): self._ollama_show,
        }

    # ---- entry point -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path.startswith("/_"):
            await self._control(method, path, send)
            return
        is_v1 = path.startswith("/v1/")
        if not is_v1 and not path.startswith("/api/"):
            if path == "/" and method in ("GET", "HEAD"):
                # Ollama answers its root with this text; some clients use it as a health check.
                await self._send_raw(send, 200, b"Ollama is running", b"text/plain; charset=utf-8")
            else:
                await self._send_raw(send, 404, b"404 page not found", b"text/plain; charset=utf-8")
            return

        stats = self.stats
        stats.requests += 1
        if self.failing in ("error", "overloaded"):
            await self._send_failing(scope, send, is_v1=is_v1)
            return
        if self.failing == "hang":
            await _wait_disconnect(receive)
            return
        stats.in_flight += 1
        if stats.in_flight > stats.max_in_flight:
            stats.max_in_flight = stats.in_flight
        try:
            if self.auth is not None and not self._authorized(scope):
                if is_v1 and _speaks_anthropic(scope):
                    status, body = _anthropic_error("authentication_error", "invalid x-api-key")
                elif is_v1:
                    status = 401
                    body = _openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
                else:
                    status, body = 401, b'{"error":"unauthorized"}'
                await self._send_json(send, status, body)
                return
            handler = self._routes.get((method, path))
            if handler is None and is_v1 and method == "GET" and path.startswith("/v1/models/"):
                handler = self._model
            if handler is None:
                if is_v1 and _speaks_anthropic(scope):
                    status, body = _anthropic_error("not_found_error", f"Not Found: {method} {path}")
                elif is_v1:
                    status = 404
                    body = _openai_error(f"Unknown request URL: {method} {path}", "invalid_request_error", None)
                else:
                    status, body = 404, b'{"error":"404 page not found"}'
                await self._send_json(send, status, body)
                return
            await handler(scope, receive, send)
        finally:
            stats.in_flight -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if (name == b"authorization" and value == self.auth) or (name == b"x-api-key" and value == self.key):
                return True
        return False

    async def _send_failing(self, scope: Scope, send: Send, *, is_v1: bool) -> None:
        """Answer as POST /_fail/error (500) or /_fail/overloaded (529) says, in the request's protocol."""
        error = self.failing == "error"
        if is_v1 and _speaks_anthropic(scope):
            kind = "api_error" if error else "overloaded_error"
            status, body = _anthropic_error(kind, f"the upstream is failing (POST /_fail/{self.failing})")
        else:
            status = 500 if error else 529
            body = orjson.dumps({"error": f"the upstream is failing (POST /_fail/{self.failing})"})
        await self._send_json(send, status, body)

    # ---- helpers -----------------------------------------------------------------------------

    @staticmethod
    async def _send_json(send: Send, status: int, payload: bytes) -> None:
        start, body = _json_response(status, payload)
        await send(start)
        await send(body)

    @staticmethod
    async def _send_raw(send: Send, status: int, payload: bytes, content_type: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(payload))],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _static(self, payload: bytes) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        start, body = _json_response(200, payload)

        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await send(start)
            await send(body)

        return handler

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /v1/models: Anthropic's page shape for Anthropic clients, OpenAI's list otherwise."""
        if not _speaks_anthropic(scope):
            await self._send_json(send, 200, self._models_body)
            return
        query = parse_qs(scope["query_string"].decode("latin-1"))
        models = self._anthropic_models
        ids = [m["id"] for m in models]
        limit_arg = query.get("limit", ["20"])[-1]
        after, before = query.get("after_id", [None])[-1], query.get("before_id", [None])[-1]
        if not limit_arg.isdigit() or not 1 <= int(limit_arg) <= 1000:
            status, body = _anthropic_error("invalid_request_error", "limit: Input should be between 1 and 1000")
        elif (after is not None and after not in ids) or (before is not None and before not in ids):
            status, body = _anthropic_error("invalid_request_error", "after_id/before_id: no such model")
        else:
            limit = int(limit_arg)
            if before is not None:  # the page just before `before`, in list order
                end = ids.index(before)
                page, has_more = models[max(end - limit, 0) : end], end - limit > 0
            else:
                start = ids.index(after) + 1 if after is not None else 0
                page, has_more = models[start : start + limit], start + limit < len(models)
            status = 200
            body = orjson.dumps(
                {
                    "data": page,
                    "has_more": has_more,
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None,
                }
            )
        await self._send_json(send, status, body)

    async def _model(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /v1/models/{id}, in the shape of the client's protocol."""
        name = scope["path"][len("/v1/models/") :]
        anthropic = _speaks_anthropic(scope)
        if name not in MODELS:
            if anthropic:
                await self._send_json(send, *_anthropic_error("not_found_error", f"model: {name}"))
            else:
                await self._send_json(send, 404, self._not_found_body(name, proto="openai"))
        elif anthropic:
            info = next(m for m in self._anthropic_models if m["id"] == name)
            await self._send_json(send, 200, orjson.dumps(info))
        else:
            payload = {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"}
            await self._send_json(send, 200, orjson.dumps(payload))

    async def _read_body(self, scope: Scope, receive: Receive) -> Any:
        """Read and parse the JSON request body, logging it; returns None for bad JSON."""
        msg = await receive()
        raw: bytes = msg.get("body", b"")
        if msg.get("more_body"):
            chunks = [raw]
            while msg.get("more_body"):
                msg = await receive()
                chunks.append(msg.get("body", b""))
            raw = b"".join(chunks)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.request_log.append(
            (scope["path"], body if body is not None else raw.decode("utf-8", "replace"), scope["headers"])
        )
        return body if isinstance(body, dict) else None

    @staticmethod
    def _not_found_body(model: Any, *, proto: _Proto) -> bytes:
        if proto == "openai":
            return _openai_error(f"model '{model}' not found", "invalid_request_error", "model_not_found")
        if proto == "anthropic":
            return _anthropic_error("not_found_error", f"model: {model}")[1]
        return orjson.dumps({"error": f'model "{model}" not found, try pulling it first'})

    async def _bad_request(self, send: Send, message: str, *, proto: _Proto) -> None:
        if proto == "openai":
            body = _openai_error(message, "invalid_request_error", None)
        elif proto == "anthropic":
            body = _anthropic_error("invalid_request_error", message)[1]
        else:
            body = orjson.dumps({"error": message})
        await self._send_json(send, 400, body)

    async def _gate(self, body: dict[str, Any], receive: Receive, send: Send, *, proto: _Proto) -> ModelSpec | None:
        """Resolve the model and act out error/hang behaviours; None means the response is done."""
        model = body.get("model")
        spec = MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            await self._send_json(send, 404, self._not_found_body(model, proto=proto))
            return None
        if spec.behaviour == "error":
            if proto == "openai":
                payload = _openai_error("The fake upstream failed on purpose.", "server_error", "fake_error")
            elif proto == "anthropic":
                payload = _anthropic_error("api_error", "The fake upstream failed on purpose.")[1]
            else:
                payload = b'{"error":"the fake upstream failed on purpose"}'
            await self._send_json(send, 500, payload)
            return None
        if spec.behaviour == "hang":
            # Never start the response; the body is already read, so receive() now only returns
            # when the client disconnects (or the server shuts down and cancels us).
            await _wait_disconnect(receive)
            self.stats.disconnects += 1
            return None
        return spec

    def _plan(self, spec: ModelSpec, text: str, prompt_tokens: int, cap: Any) -> _Plan:
        n = spec.tokens if spec.tokens is not None else self.tokens
        finish = "stop"
        # bool is an int subclass; a JSON `true` is not a token limit. Negative means unlimited
        # (Ollama's num_predict=-1).
        if isinstance(cap, int) and not isinstance(cap, bool) and 0 <= cap < n:
            n, finish = cap, "length"
        self.stats.prompt_tokens += prompt_tokens
        return _Plan(
            spec=spec,
            tokens=reply_tokens(text, n),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            delay=max(spec.token_delay, self.token_delay),
        )

    async def _abort_midway(self, send: Send, partial: bytes) -> None:
        """Start a JSON response, send part of it, then make uvicorn drop the connection."""
        self.stats.aborted += 1
        # The announced length is never reached, so every HTTP client sees a truncated body.
        await send({"type": "http.response.start", "status": 200, "headers": _HDR_JSON_TRUNCATED})
        await send({"type": "http.response.body", "body": partial, "more_body": True})
        raise _AbortConnectionError

    async def _wait_before_full_response(self, plan: _Plan, receive: Receive) -> bool:
        """Non-stream: simulate latency + generation time; False if the client left meanwhile."""
        wait = self.latency + plan.delay * len(plan.tokens)
        if wait <= 0:
            return True  # fast path: no watcher task, this is what benchmarks hit
        watch = _ClientWatch(receive)
        try:
            await watch.pause(wait)
            if watch.gone:
                self.stats.disconnects += 1
                return False
            return True
        finally:
            watch.close()

    # ---- OpenAI ------------------------------------------------------------------------------

    async def _openai_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.chat_requests += 1
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="openai")
            return
        spec = await self._gate(body, receive, send, proto="openai")
        if spec is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = []
        cap = body.get("max_completion_tokens")
        if cap is None:
            cap = body.get("max_tokens")
        plan = self._plan(spec, last_user_text(messages), prompt_token_count(messages), cap)
        completion_id = f"chatcmpl-fake{next(self._ids):012d}"
        created = int(time.time())
        model = spec.name
        usage = {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": len(plan.tokens),
            "total_tokens": plan.prompt_tokens + len(plan.tokens),
        }

        if not body.get("stream"):
            if spec.behaviour == "midfail":
                await self._abort_midway(send, b'{"object":"chat.completion","choices":[{"ind')
            if not await self._wait_before_full_response(plan, receive):
                return
            result: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(plan.tokens), "refusal": None},
                        "logprobs": None,
                        "finish_reason": plan.finish_reason,
                    }
                ],
            }
            if spec.usage:
                result["usage"] = usage
            await self._send_json(send, 200, orjson.dumps(result))
            self.stats.completion_tokens_served += len(plan.tokens)
            return

        opts = body.get("stream_options")
        include_usage = spec.usage and isinstance(opts, dict) and bool(opts.get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None  # OpenAI sends an explicit null on every chunk but the last
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        watch = _ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": _HDR_SSE})
            await send(
                {
                    "type": "http.response.body",
                    "body": chunk({"role": "assistant", "content": ""}, None),
                    "more_body": True,
                }
            )
            if not await self._stream_tokens(
                plan, watch, send, lambda tok: chunk({"content": tok}, None), midfail_partial=b'data: {"id'
            ):
                return
            tail = [chunk({}, plan.finish_reason)]
            if include_usage:
                final = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
                tail.append(b"data: " + orjson.dumps(final) + b"\n\n")
            tail.append(_SSE_DONE)
            await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})
        finally:
            watch.close()

    async def _stream_tokens(
        self,
        plan: _Plan,
        watch: _ClientWatch,
        send: Send,
        render: Callable[[str], bytes],
        *,
        midfail_partial: bytes,
    ) -> bool:
        """Send one chunk per token; False if the client went away (counted once here)."""
        return await self._stream_pieces(map(render, plan.tokens), plan, watch, send, midfail_partial=midfail_partial)

    async def _stream_pieces(
        self,
        pieces: Iterable[bytes],
        plan: _Plan,
        watch: _ClientWatch,
        send: Send,
        *,
        midfail_partial: bytes,
    ) -> bool:
        """Send each piece (one token's worth) after the token delay; False if the client went away."""
        stats = self.stats
        midfail = plan.spec.behaviour == "midfail"
        for i, piece in enumerate(pieces):
            if midfail and i == MIDFAIL_TOKENS:
                break
            await watch.pause(plan.delay)
            if watch.gone:
                stats.disconnects += 1
                return False
            try:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            except OSError:  # other servers (and future uvicorn) raise instead of dropping the write
                stats.disconnects += 1
                return False
            stats.completion_tokens_served += 1
        if midfail:
            stats.aborted += 1
            # A half-written event makes the breakage visible even to lenient line parsers.
            await send({"type": "http.response.body", "body": midfail_partial, "more_body": True})
            raise _AbortConnectionError
        return True

    async def _openai_embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.embed_requests += 1
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="openai")
            return
        inputs = _embed_inputs(body.get("input"))
        if inputs is None:
            await self._bad_request(send, "'input' must be a string or a list", proto="openai")
            return
        spec = await self._gate(body, receive, send, proto="openai")
        if spec is None:
            return
        if spec.behaviour == "midfail":
            await self._abort_midway(send, b'{"object":"list","data":[{"obj')
        n_tokens = sum(n for _, n in inputs)
        self.stats.prompt_tokens += n_tokens
        if self.latency > 0 and not await self._wait_latency(receive):
            return
        as_base64 = body.get("encoding_format") == "base64" and spec.behaviour != "floats"
        data = []
        for i, (text, _) in enumerate(inputs):
            vec = _embedding(text)
            emb: Any = base64.b64encode(_EMBED_F32.pack(*vec)).decode() if as_base64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        result: dict[str, Any] = {"object": "list", "data": data, "model": spec.name}
        if spec.usage:
            result["usage"] = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        await self._send_json(send, 200, orjson.dumps(result))

    async def _ollama_show(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Ollama's model details, in the shape of its /api/show."""
        body = await self._read_body(scope, receive)
        model = (body or {}).get("model") or (body or {}).get("name")
        spec = MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            await self._send_json(send, 404, orjson.dumps({"error": f"model '{model}' not found"}))
            return
        embeds = "embed" in spec.name or spec.behaviour == "floats"
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": "fake",
            "families": ["fake"],
            "parameter_size": "1B",
            "quantization_level": "Q4_0",
        }
        answer = {
            "modelfile": f"# fake upstream model {spec.name}\nFROM {spec.name}\n",
            "parameters": "num_ctx 4096",
            "template": "{{ .Prompt }}",
            "details": details,
            "model_info": {"general.architecture": "fake", "fake.context_length": 4096},
            "capabilities": ["embedding"] if embeds else ["completion", "tools"],
            "modified_at": "2026-01-01T00:00:00Z",
        }
        await self._send_json(send, 200, orjson.dumps(answer))

    async def _wait_latency(self, receive: Receive) -> bool:
        watch = _ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return False
            return True
        finally:
            watch.close()

    # ---- Ollama ------------------------------------------------------------------------------

    async def _ollama_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Serves /api/chat and /api/generate; they differ only in where the text lives.
        self.stats.chat_requests += 1
        start_ns = time.perf_counter_ns()
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "invalid request body", proto="ollama")
            return
        spec = await self._gate(body, receive, send, proto="ollama")
        if spec is None:
            return
        is_chat = scope["path"] == "/api/chat"
        model = spec.name
        if is_chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                messages = []
            text, prompt_tokens = last_user_text(messages), prompt_token_count(messages)
        else:
            prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
            system = body.get("system") if isinstance(body.get("system"), str) else ""
            messages = [prompt] if prompt else []  # only its emptiness matters below
            text, prompt_tokens = prompt, len(prompt.split()) + len(system.split()) + 4
        created_at = _iso_now()

        if not messages:
            # Ollama treats an empty chat/prompt as "load the model" and answers done_reason=load.
            done: dict[str, Any] = {
                "model": model,
                "created_at": created_at,
                "done": True,
                "done_reason": "load",
            }
            if is_chat:
                done["message"] = {"role": "assistant", "content": ""}
            else:
                done["response"] = ""
            await self._send_json(send, 200, orjson.dumps(done))
            return

        options = body.get("options")
        cap = options.get("num_predict") if isinstance(options, dict) else None
        plan = self._plan(spec, text, prompt_tokens, cap)

        def line(content: str) -> dict[str, Any]:
            if is_chat:
                return {
                    "model": model,
                    "created_at": created_at,
                    "message": {"role": "assistant", "content": content},
                    "done": False,
                }
            return {"model": model, "created_at": created_at, "response": content, "done": False}

        def final(content: str, first_token_ns: int) -> bytes:
            obj = line(content)
            now = time.perf_counter_ns()
            obj["done"] = True
            obj["done_reason"] = plan.finish_reason
            obj["total_duration"] = now - start_ns
            obj["load_duration"] = 0
            if spec.usage:
                obj["prompt_eval_count"] = plan.prompt_tokens
            obj["prompt_eval_duration"] = max(first_token_ns - start_ns, 1)
            if spec.usage:
                obj["eval_count"] = len(plan.tokens)
            obj["eval_duration"] = max(now - first_token_ns, 1)
            return orjson.dumps(obj)

        if body.get("stream") is False:  # Ollama streams unless told otherwise
            if spec.behaviour == "midfail":
                await self._abort_midway(send, b'{"model":"fake-midfail","created_at":"')
            first_ns = time.perf_counter_ns()
            if not await self._wait_before_full_response(plan, receive):
                return
            await self._send_json(send, 200, final("".join(plan.tokens), first_ns))
            self.stats.completion_tokens_served += len(plan.tokens)
            return

        watch = _ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            first_ns = time.perf_counter_ns()
            await send({"type": "http.response.start", "status": 200, "headers": _HDR_NDJSON})
            if not await self._stream_tokens(
                plan, watch, send, lambda tok: orjson.dumps(line(tok)) + b"\n", midfail_partial=b'{"model'
            ):
                return
            await send({"type": "http.response.body", "body": final("", first_ns) + b"\n", "more_body": False})
        finally:
            watch.close()

    async def _ollama_embed(self, scope: Scope, receive: Receive, send: Send) -> None:
        # /api/embed (batch, "input") and the legacy /api/embeddings (single, "prompt").
        self.stats.embed_requests += 1
        start_ns = time.perf_counter_ns()
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "invalid request body", proto="ollama")
            return
        legacy = scope["path"] == "/api/embeddings"
        raw = body.get("prompt", "") if legacy else body.get("input")
        inputs = _embed_inputs(raw if raw is not None else [])
        if inputs is None or (legacy and not isinstance(raw, str)):
            await self._bad_request(send, "invalid input type", proto="ollama")
            return
        spec = await self._gate(body, receive, send, proto="ollama")
        if spec is None:
            return
        if spec.behaviour == "midfail":
            await self._abort_midway(send, b'{"model":"fake-midfail","embeddings":[[0.')
        n_tokens = sum(n for _, n in inputs)
        self.stats.prompt_tokens += n_tokens
        if self.latency > 0 and not await self._wait_latency(receive):
            return
        result: dict[str, Any]
        if legacy:
            result = {"embedding": _embedding(inputs[0][0])}
        else:
            result = {"model": spec.name, "embeddings": [_embedding(t) for t, _ in inputs]}
            result["total_duration"] = time.perf_counter_ns() - start_ns
            result["load_duration"] = 0
            if spec.usage:
                result["prompt_eval_count"] = n_tokens
        await self._send_json(send, 200, orjson.dumps(result))

    # ---- Anthropic ---------------------------------------------------------------------------

    async def _anthropic_request(
        self, scope: Scope, receive: Receive, send: Send, *, generation: bool
    ) -> _AnthropicRequest | None:
        """Read and check a Messages request; None means a 400 was sent."""
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="anthropic")
            return None
        try:
            return _parse_anthropic(body, generation=generation)
        except _InvalidRequestError as exc:
            await self._bad_request(send, str(exc), proto="anthropic")
            return None

    async def _anthropic_count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = await self._anthropic_request(scope, receive, send, generation=False)
        if req is None:
            return
        if req.model not in MODELS:
            await self._send_json(send, 404, self._not_found_body(req.model, proto="anthropic"))
            return
        await self._send_json(send, 200, orjson.dumps({"input_tokens": prompt_token_count(req.chat)}))

    async def _anthropic_messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.chat_requests += 1
        req = await self._anthropic_request(scope, receive, send, generation=True)
        if req is None:
            return
        spec = await self._gate({"model": req.model}, receive, send, proto="anthropic")
        if spec is None:
            return
        text = last_user_text(req.chat)
        plan = self._plan(spec, text, prompt_token_count(req.chat), req.max_tokens)
        stop_reason = "max_tokens" if plan.finish_reason == "length" else "end_turn"
        stop_sequence: str | None = None
        tool_use: dict[str, Any] | None = None
        tool = req.chosen_tool()
        if tool is not None:
            arguments = tool_call_input(tool, text)
            units = reply_tokens(text, TOOL_PREAMBLE_TOKENS) + _json_pieces(json.dumps(arguments, ensure_ascii=False))
            if len(units) <= req.max_tokens:
                tool_id = f"toolu_fake{next(self._ids):014d}"
                tool_use = {"type": "tool_use", "id": tool_id, "name": tool["name"], "input": arguments}
                plan = replace(plan, tokens=units)
                stop_reason = "tool_use"
            else:  # the call does not fit: the model talks until max_tokens instead
                plan = replace(plan, tokens=reply_tokens(text, req.max_tokens))
                stop_reason = "max_tokens"
        elif req.stop_sequences:
            kept, stop_sequence = _cut_at_stop(plan.tokens, req.stop_sequences)
            if stop_sequence is not None:
                plan = replace(plan, tokens=kept)
                stop_reason = "stop_sequence"
        n_text = TOOL_PREAMBLE_TOKENS if tool_use is not None else len(plan.tokens)
        message_id = f"msg_fake{next(self._ids):016d}"
        model = spec.name
        usage = {
            "input_tokens": plan.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": len(plan.tokens),
        }

        if not req.stream:
            if spec.behaviour == "midfail":
                await self._abort_midway(send, b'{"id":"' + message_id.encode() + b'","type":"message","role":"assis')
            if not await self._wait_before_full_response(plan, receive):
                return
            content: list[dict[str, Any]] = [{"type": "text", "text": "".join(plan.tokens[:n_text])}]
            if tool_use is not None:
                content.append(tool_use)
            message: dict[str, Any] = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
            }
            if spec.usage:
                message["usage"] = usage
            await self._send_json(send, 200, orjson.dumps(message))
            self.stats.completion_tokens_served += len(plan.tokens)
            return

        def delta(index: int, payload: dict[str, Any]) -> bytes:
            return _sse_event(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload})

        def pieces() -> Iterator[bytes]:
            for i, tok in enumerate(plan.tokens):
                if i < n_text:
                    yield delta(0, {"type": "text_delta", "text": tok})
                    continue
                lead = b""
                if i == n_text and tool_use is not None:
                    # The tool_use block opens with an empty input, then an empty input_json_delta, as Anthropic's do.
                    lead = (
                        _sse_event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
                        + _sse_event(
                            b"content_block_start",
                            {"type": "content_block_start", "index": 1, "content_block": {**tool_use, "input": {}}},
                        )
                        + delta(1, {"type": "input_json_delta", "partial_json": ""})
                    )
                yield lead + delta(1, {"type": "input_json_delta", "partial_json": tok})

        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if spec.usage:
            start["usage"] = {**usage, "output_tokens": 1}  # Anthropic's message_start counts one output token
        head = (
            _sse_event(b"message_start", {"type": "message_start", "message": start})
            + _sse_event(
                b"content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            + _SSE_PING
        )
        end: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        }
        if spec.usage:
            end["usage"] = usage  # cumulative totals, as Anthropic's message_delta carries them
        tail = (
            _sse_event(b"content_block_stop", {"type": "content_block_stop", "index": 1 if tool_use else 0})
            + _sse_event(b"message_delta", end)
            + _sse_event(b"message_stop", {"type": "message_stop"})
        )

        watch = _ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": _HDR_SSE})
            await send({"type": "http.response.body", "body": head, "more_body": True})
            if not await self._stream_pieces(
                pieces(), plan, watch, send, midfail_partial=b'event: content_block_delta\ndata: {"type":"conte'
            ):
                return
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            watch.close()

    # ---- control -----------------------------------------------------------------------------

    async def _control(self, method: str, path: str, send: Send) -> None:
        if method == "GET" and path == "/_stats":
            await self._send_json(send, 200, orjson.dumps(self.stats.as_dict()))
        elif method == "GET" and path == "/_requests":
            logged = [
                {
                    "path": logged_path,
                    "body": body,
                    "headers": {
                        k.decode("latin-1"): v.decode("latin-1")
                        for k, v in headers
                        if k not in (b"authorization", b"x-api-key")
                    },
                }
                for logged_path, body, headers in self.request_log
            ]
            await self._send_json(send, 200, orjson.dumps(logged))
        elif method == "POST" and path in ("/_fail/ok", "/_fail/error", "/_fail/overloaded", "/_fail/hang"):
            self.failing = path.removeprefix("/_fail/")
            await self._send_json(send, 200, b'{"ok":true}')
        elif method == "POST" and path == "/_reset":
            self.stats.reset()
            self.request_log.clear()
            await self._send_json(send, 200, b'{"ok":true}')
        else:
            await self._send_json(send, 404, b'{"error":"unknown control endpoint"}')


# --------------------------------------------------------------------------------------------------
# Process entry point
# --------------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake OpenAI/Ollama/Anthropic upstream for Gatehouse tests and benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the READY line)")
    p.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' or 'x-api-key: KEY' on /v1 and /api"
    )
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds before each token, every model")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="default completion length")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before a generation response starts")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake upstream until SIGTERM/SIGINT; prints `READY <port>` once listening."""
    import uvicorn  # imported here so `from tests.support.fake_upstream import ...` stays light

    args = _parse_args(argv)
    app = FakeUpstreamApp(api_key=args.api_key, token_delay=args.token_delay, tokens=args.tokens, latency=args.latency)
    # Bind ourselves so port 0 resolves to a real port we can announce before serving.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.create_server((args.host, args.port), family=family, backlog=4096)
    port = sock.getsockname()[1]

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                sys.stdout.write(f"READY {port}\n")
                sys.stdout.flush()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the captured signal after a graceful shutdown, which turns SIGTERM
            # into exit status -15; we only want the graceful shutdown and then a clean exit 0.
            # The handlers are deliberately never restored: the process ends right after serving,
            # and a second SIGTERM/SIGINT arriving during teardown must not kill it with -15 either.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        backlog=4096,
        # Long keep-alive: a short one races with pooled clients reusing an idle connection just as
        # we close it, which would make gateway tests flaky for reasons unrelated to the gateway.
        timeout_keep_alive=75,
        # fake-hang / fake-long requests must not hold up shutdown for long.
        timeout_graceful_shutdown=1,
    )
    # Config() (re)configures logging, so the filter must be attached afterwards.
    logging.getLogger("uvicorn.error").addFilter(_QuietExpectedErrors())
    _Server(config).run(sockets=[sock])
    return 0


# --------------------------------------------------------------------------------------------------
# Test helper
# --------------------------------------------------------------------------------------------------


@dataclass
class FakeUpstream:
    """Handle on a running fake upstream subprocess."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    _client: httpx.Client = field(repr=False)

    def stats(self) -> dict[str, int]:
        """Current counters from GET /_stats."""
        r = self._client.get("/_stats")
        r.raise_for_status()
        result: dict[str, int] = r.json()
        return result

    def requests(self) -> list[dict[str, Any]]:
        """The last request bodies logged by the upstream (GET /_requests)."""
        r = self._client.get("/_requests")
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()
        return result

    def reset(self) -> None:
        """Clear counters and the request log (POST /_reset)."""
        self._client.post("/_reset").raise_for_status()

    def fail(self, mode: str) -> None:
        """Answer every request normally (`ok`), with a 500 (`error`), or never (`hang`)."""
        self._client.post(f"/_fail/{mode}").raise_for_status()

    def wait_for_stats(self, predicate: Callable[[dict[str, int]], bool], timeout: float = 5.0) -> dict[str, int]:
        """Poll /_stats until predicate(stats) holds; raise TimeoutError with the last stats otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.stats()
            if predicate(current):
                return current
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fake upstream stats never matched: {current}")
            time.sleep(0.02)


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> int:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    # select + os.read rather than readline() so a silent child cannot block us past the timeout.
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"fake upstream did not print READY within {timeout} s (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"fake upstream exited before READY (status {proc.wait()}, output {buf!r})")
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode().strip()
    word, _, port = line.partition(" ")
    if word != "READY" or not port.isdigit():
        raise RuntimeError(f"unexpected first line from fake upstream: {line!r}")
    return int(port)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def run_fake_upstream(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    token_delay: float | None = None,
    tokens: int | None = None,
    latency: float | None = None,
    ready_timeout: float = 15.0,
) -> Iterator[FakeUpstream]:
    """Start the fake upstream in a subprocess, yield a FakeUpstream, and stop it on exit."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--host", host, "--port", str(port)]
    if api_key is not None:
        cmd += ["--api-key", api_key]
    if token_delay is not None:
        cmd += ["--token-delay", str(token_delay)]
    if tokens is not None:
        cmd += ["--tokens", str(tokens)]
    if latency is not None:
        cmd += ["--latency", str(latency)]
    # stderr is inherited so crashes show up in the test output; stdout carries only READY.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
    try:
        real_port = _read_ready_line(proc, ready_timeout)
        url_host = f"[{host}]" if ":" in host else host
        url = f"http://{url_host}:{real_port}"
        # trust_env=False: a proxy configured in the environment must not intercept loopback calls.
        with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as client:
            yield FakeUpstream(url=url, port=real_port, process=proc, _client=client)
    finally:
        _stop(proc)


if __name__ == "__main__":
    sys.exit(main())
