"""Anthropic's Messages API: the request checked as Anthropic checks it, and the answer in its shapes."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from .content import (
    MODEL_CREATED,
    MODELS,
    choose_tool,
    content_text,
    last_user_text,
    prompt_token_count,
    thinking_signature,
)
from .core import HDR_SSE, MIDWAY, ClientWatch, Core, Receive, Scope, Send, anthropic_error, sse_event

# --------------------------------------------------------------------------------------------------
# Anthropic Messages: the request checked as Anthropic checks it, and what the fake model makes of it.
# --------------------------------------------------------------------------------------------------

TOOL_PREAMBLE_TOKENS = 2  # words of text before a tool_use block, as Claude usually says something first
ANTHROPIC_MAX_INPUT_TOKENS = 4096  # the context length /api/show reports too
ANTHROPIC_MAX_TOKENS = 1024
_MODEL_CREATED_AT = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MODEL_CREATED))
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
_SSE_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


class InvalidRequestError(Exception):
    """A request Anthropic would refuse with 400 invalid_request_error; the message says where."""


def _block_text(block: Mapping[str, Any]) -> str:
    """What a content block adds to the prompt's text: a text block's text, a tool result's text."""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        return content_text(block.get("content"))
    return ""


def anthropic_chat_messages(system: Any, messages: Sequence[Any]) -> list[dict[str, str]]:
    """Chat-style view of an Anthropic request, which the fake counts and answers like an OpenAI chat.

    The system prompt (a string or text blocks) is a first "system" message; each message keeps its
    role and the text of its text blocks and tool results.
    """
    chat = [{"role": "system", "content": content_text(system)}] if system else []
    for msg in messages:
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if isinstance(content, list):
            text = " ".join(t for t in (_block_text(b) for b in content if isinstance(b, Mapping)) if t)
        else:
            text = content if isinstance(content, str) else ""
        chat.append({"role": str(msg.get("role")) if isinstance(msg, Mapping) else "", "content": text})
    return chat


@dataclass(slots=True)
class AnthropicRequest:
    """A checked /v1/messages (or count_tokens) request."""

    model: str
    max_tokens: int
    stream: bool
    chat: list[dict[str, str]]  # anthropic_chat_messages(): what is counted and what seeds the reply
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any]
    stop_sequences: list[str]
    answers_tool: bool  # the last message is a user turn carrying tool_result blocks
    think: bool  # a reasoning model thinks unless `thinking` says "disabled"

    def chosen_tool(self) -> dict[str, Any] | None:
        """The tool the fake model calls now, if any (see the module docstring)."""
        choice = self.tool_choice.get("type", "auto")
        if not self.tools or choice == "none" or self.answers_tool or self.chat[-1]["role"] != "user":
            return None
        name = self.tool_choice.get("name") if choice == "tool" else None
        tool = choose_tool(self.tools, self.chat[-1]["content"], required=choice == "any", name=name)
        return dict(tool) if tool is not None else None


def _check_source(source: Any, where: str) -> None:
    if not isinstance(source, Mapping):
        raise InvalidRequestError(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in _IMAGE_MEDIA_TYPES:
            raise InvalidRequestError(
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )
        try:
            base64.b64decode(str(source.get("data", "")), validate=True)
        except ValueError:
            raise InvalidRequestError(f"{where}.source.data: The image data is not valid base64") from None
    elif kind == "url":
        if not isinstance(source.get("url"), str):
            raise InvalidRequestError(f"{where}.source.url: Field required")
    elif kind != "file":
        raise InvalidRequestError(f"{where}.source.type: Input should be 'base64', 'url' or 'file'")


def _check_text_blocks(content: Any, where: str) -> None:
    """`content` must be a string or a list of text blocks (a system prompt, a system message)."""
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}: Input should be a valid string or a list of text blocks")
    for j, block in enumerate(content):
        if not isinstance(block, Mapping) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise InvalidRequestError(f"{where}.{j}: Input should be a text block")


def _check_blocks(content: Any, where: str, role: str) -> tuple[list[str], list[str]]:
    """Check one message's content; return the ids of its tool_use blocks and of its tool_result blocks."""
    if isinstance(content, str):
        return [], []
    if not isinstance(content, list) or not content:
        raise InvalidRequestError(f"{where}: Input should be a valid string or a non-empty list of content blocks")
    uses: list[str] = []
    results: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise InvalidRequestError(f"{at}.text: Field required")
        elif kind == "image":
            _check_source(block.get("source"), at)
        elif kind == "document":
            if not isinstance(block.get("source"), Mapping):
                raise InvalidRequestError(f"{at}.source: Field required")
        elif kind == "tool_use" and role == "assistant":
            if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
                raise InvalidRequestError(f"{at}: tool_use blocks need an id and a name")
            if not isinstance(block.get("input"), Mapping):
                raise InvalidRequestError(f"{at}.input: Input should be a valid dictionary")
            uses.append(block["id"])
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise InvalidRequestError(f"{at}.tool_use_id: Field required")
            inner = block.get("content", "")
            if not isinstance(inner, str):
                if not isinstance(inner, list):
                    raise InvalidRequestError(f"{at}.content: Input should be a valid string or list")
                for k, part in enumerate(inner):
                    part_kind = part.get("type") if isinstance(part, Mapping) else None
                    if part_kind == "image":
                        _check_source(part.get("source"), f"{at}.content.{k}")
                    elif part_kind != "text" or not isinstance(part.get("text"), str):
                        raise InvalidRequestError(f"{at}.content.{k}: Input should be a text or image block")
            results.append(block["tool_use_id"])
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            pass
        else:
            raise InvalidRequestError(f"{at}.type: a {role} message cannot hold a {kind!r} block")
    return uses, results


def _unanswered(index: int, tool_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {tool_id}. "
        "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
    )


def parse_anthropic(body: Mapping[str, Any], *, generation: bool) -> AnthropicRequest:
    """Check a /v1/messages body (count_tokens when not `generation`) as Anthropic does."""
    model = body.get("model")
    if not isinstance(model, str):
        raise InvalidRequestError("model: Field required")
    max_tokens = body.get("max_tokens")
    if generation:
        if max_tokens is None:
            raise InvalidRequestError("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InvalidRequestError("max_tokens: Input should be an integer greater than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequestError("messages: Field required")
    if not messages:
        raise InvalidRequestError("messages: at least one message is required")
    system = body.get("system")
    if system is not None:
        _check_text_blocks(system, "system")

    pending: list[str] = []  # tool_use ids the next message must answer
    answers_tool = False
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, Mapping) else None
        if role not in ("user", "assistant", "system"):
            raise InvalidRequestError(f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'")
        if role == "system":
            _check_text_blocks(msg.get("content"), f"messages.{i}.content")
            uses: list[str] = []
            results: list[str] = []
        else:
            uses, results = _check_blocks(msg.get("content"), f"messages.{i}.content", role)
        unexpected = [r for r in results if r not in pending]
        if unexpected:
            raise InvalidRequestError(
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
        raise InvalidRequestError("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise InvalidRequestError(f"tools.{i}.name: Field required")
        if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"), Mapping):
            raise InvalidRequestError(f"tools.{i}.custom.input_schema: Field required")
    tool_choice = body.get("tool_choice", {"type": "auto"})
    if not isinstance(tool_choice, Mapping) or tool_choice.get("type") not in _TOOL_CHOICES:
        raise InvalidRequestError("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if tool_choice["type"] in ("any", "tool") and not tools:
        raise InvalidRequestError(f"tool_choice: tool_choice.type {tool_choice['type']!r} needs tools")
    if tool_choice["type"] == "tool" and tool_choice.get("name") not in {t["name"] for t in tools}:
        raise InvalidRequestError(f"tool_choice.name: no tool is named {tool_choice.get('name')!r}")
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequestError("stop_sequences: Input should be a valid list of strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream: Input should be a valid boolean")
    thinking = body.get("thinking")
    if thinking is not None and (not isinstance(thinking, Mapping) or not isinstance(thinking.get("type"), str)):
        raise InvalidRequestError("thinking.type: Field required")
    return AnthropicRequest(
        model=model,
        max_tokens=max_tokens if isinstance(max_tokens, int) and generation else 0,
        stream=stream,
        chat=anthropic_chat_messages(system, messages),
        tools=tools,
        tool_choice=dict(tool_choice),
        stop_sequences=stops,
        answers_tool=answers_tool,
        think=thinking is None or thinking["type"] != "disabled",
    )


def speaks_anthropic(scope: Scope) -> bool:
    """Whether a /v1 request comes from an Anthropic client (its paths, or the headers its SDKs send)."""
    if scope["path"].startswith("/v1/messages"):
        return True
    return any(name in (b"anthropic-version", b"x-api-key") for name, _ in scope["headers"])


# Anthropic's model objects, in the order of MODELS.
ANTHROPIC_MODELS: list[dict[str, Any]] = [
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


def anthropic_models_page(query_string: bytes) -> tuple[int, bytes]:
    """GET /v1/models for an Anthropic client: a page of ANTHROPIC_MODELS (limit, after_id, before_id)."""
    query = parse_qs(query_string.decode("latin-1"))
    models = ANTHROPIC_MODELS
    ids = [m["id"] for m in models]
    limit_arg = query.get("limit", ["20"])[-1]
    after, before = query.get("after_id", [None])[-1], query.get("before_id", [None])[-1]
    if not limit_arg.isdigit() or not 1 <= int(limit_arg) <= 1000:
        return anthropic_error("invalid_request_error", "limit: Input should be between 1 and 1000")
    if (after is not None and after not in ids) or (before is not None and before not in ids):
        return anthropic_error("invalid_request_error", "after_id/before_id: no such model")
    limit = int(limit_arg)
    if before is not None:  # the page just before `before`, in list order
        end = ids.index(before)
        page, has_more = models[max(end - limit, 0) : end], end - limit > 0
    else:
        start = ids.index(after) + 1 if after is not None else 0
        page, has_more = models[start : start + limit], start + limit < len(models)
    body = {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
    return 200, orjson.dumps(body)


class AnthropicProtocol(Core):
    """POST /v1/messages and /v1/messages/count_tokens."""

    async def _anthropic_request(
        self, scope: Scope, receive: Receive, send: Send, *, generation: bool
    ) -> AnthropicRequest | None:
        """Read and check a Messages request; None means a 400 was sent."""
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="anthropic")
            return None
        try:
            return parse_anthropic(body, generation=generation)
        except InvalidRequestError as exc:
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
        plan = self._plan(
            spec,
            text,
            prompt_token_count(req.chat),
            req.max_tokens,
            tool=req.chosen_tool(),
            preamble=TOOL_PREAMBLE_TOKENS,
            stops=req.stop_sequences,
            think=req.think,
        )
        if plan.stop_sequence is not None:
            stop_reason = "stop_sequence"
        else:
            stop_reason = {"length": "max_tokens", "tool_calls": "tool_use"}.get(plan.finish_reason, "end_turn")
        message_id = f"msg_fake{next(self._ids):016d}"
        tool_use: dict[str, Any] | None = None
        if plan.call is not None:
            tool_id = f"toolu_fake{next(self._ids):014d}"
            tool_use = {"type": "tool_use", "id": tool_id, "name": plan.call.name, "input": plan.call.arguments}
        thinking: dict[str, Any] | None = None
        if plan.thinking:
            signature = thinking_signature(plan.thinking_text)
            thinking = {"type": "thinking", "thinking": plan.thinking_text, "signature": signature}
        # A text block unless the model ran out of tokens while it was thinking.
        has_text = bool(plan.tokens) or not plan.thinking
        model = spec.name
        usage = {
            "input_tokens": plan.prompt_tokens - plan.cached_tokens,  # Anthropic's excludes what the cache read
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": plan.cached_tokens,
            "output_tokens": plan.completion_tokens,
        }

        if not req.stream:
            if spec.behaviour in MIDWAY:
                await self._fail_midway(
                    spec, send, receive, b'{"id":"' + message_id.encode() + b'","type":"message","role":"assis', plan
                )
                return
            if not await self._wait_before_full_response(plan, receive):
                return
            content: list[dict[str, Any]] = [thinking] if thinking is not None else []
            if has_text:
                content.append({"type": "text", "text": plan.text})
            if tool_use is not None:
                content.append(tool_use)
            message: dict[str, Any] = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": plan.stop_sequence,
            }
            if spec.usage:
                message["usage"] = usage
            await self._send_json(send, 200, orjson.dumps(message))
            self.stats.completion_tokens_served += plan.completion_tokens
            return

        # Blocks in order: (content_block_start's block, one delta per token, deltas before its stop).
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]] = []
        if thinking is not None:
            deltas = [{"type": "thinking_delta", "thinking": tok} for tok in plan.thinking]
            blocks.append(
                (
                    {"type": "thinking", "thinking": "", "signature": ""},
                    deltas,
                    [{"type": "signature_delta", "signature": thinking["signature"]}],
                )
            )
        if has_text:
            blocks.append(
                ({"type": "text", "text": ""}, [{"type": "text_delta", "text": tok} for tok in plan.tokens], [])
            )
        if tool_use is not None and plan.call is not None:
            # The tool_use block opens with an empty input, then an empty input_json_delta, as Anthropic's do.
            pieces = [{"type": "input_json_delta", "partial_json": piece} for piece in plan.call.pieces]
            blocks.append(({**tool_use, "input": {}}, [{"type": "input_json_delta", "partial_json": ""}, *pieces], []))

        def delta(index: int, payload: dict[str, Any]) -> bytes:
            return sse_event(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload})

        def block_start(index: int, block: dict[str, Any]) -> bytes:
            return sse_event(
                b"content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )

        def block_stop(index: int) -> bytes:
            return sse_event(b"content_block_stop", {"type": "content_block_stop", "index": index})

        # Each token's event goes out with the events that open its block (and close the one before).
        events: list[bytes] = []
        pending = b""
        for index, (block, deltas, closing) in enumerate(blocks):
            if index:
                pending += block_start(index, block)
            if block.get("type") == "tool_use":
                pending += delta(index, deltas[0])
                deltas = deltas[1:]
            for payload in deltas:
                events.append(pending + delta(index, payload))
                pending = b""
            pending += b"".join(delta(index, payload) for payload in closing) + block_stop(index)

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
            sse_event(b"message_start", {"type": "message_start", "message": start})
            + block_start(0, blocks[0][0])
            + _SSE_PING
        )
        end: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": plan.stop_sequence},
        }
        if spec.usage:
            end["usage"] = usage  # cumulative totals, as Anthropic's message_delta carries them
        tail = pending + sse_event(b"message_delta", end) + sse_event(b"message_stop", {"type": "message_stop"})

        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": HDR_SSE})
            await send({"type": "http.response.body", "body": head, "more_body": True})
            if not await self._stream_pieces(
                events, plan, watch, send, midfail_partial=b'event: content_block_delta\ndata: {"type":"conte'
            ):
                return
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            watch.close()
