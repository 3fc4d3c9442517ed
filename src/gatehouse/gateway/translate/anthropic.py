"""Anthropic's Messages API <-> the internal representation, both sides.

Client side: `decode_request` (a /v1/messages body), `encode_result` (a Message) and `SseEncoder` (message_start,
content_block_start/delta/stop, message_delta, message_stop, ping, error). Upstream side: `encode_request`,
`decode_result` and `SseDecoder`. Shapes: Anthropic's API reference, as the official `anthropic` package's
types carry it.
"""

from __future__ import annotations

from typing import Any

import orjson

from gatehouse.gateway import ir
from gatehouse.gateway.translate.common import (
    JSON,
    TranslationError,
    UpstreamStreamError,
    args_to_object,
    error_message,
)

MESSAGES_PATH = "/v1/messages"
VERSION = "2023-06-01"  # the version header Gatehouse sends upstream when the config names none
_STOPS: dict[str | None, ir.StopReason] = {
    "end_turn": "end",
    "max_tokens": "length",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "end",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
STOP_REASONS: dict[str, str] = {
    "end": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "content_filter": "refusal",
}
# Reasoning effort -> a thinking budget (Anthropic's minimum is 1024).
_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024
# Top-level hints that have no field of the representation; the request keeps them for a same-kind upstream.
_HINTS = ("metadata", "service_tier", "context_management", "inference_geo", "speed", "cache_control")
# Fields whose loss would change what the request means: refused with a 400 when the upstream is not Anthropic.
_REFUSED = ("container", "mcp_servers")


# --- client side: the request ----------------------------------------------------------------------


def _image(block: JSON, where: str) -> ir.Image:
    source = block.get("source")
    if not isinstance(source, dict):
        raise TranslationError(f"{where}: an image block needs a `source`")
    if source.get("type") == "base64":
        return ir.Image(str(source.get("data") or ""), str(source.get("media_type") or "image/png"))
    if source.get("type") == "url":
        return ir.Image(url=str(source.get("url") or ""))
    raise TranslationError(f"{where}: image sources of type {source.get('type')!r} are not supported for this model")


def _result_content(content: Any, where: str) -> list[ir.Text | ir.Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content)]
    out: list[ir.Text | ir.Image] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            out.append(ir.Text(str(block.get("text") or "")))
        elif kind == "image":
            out.append(_image(block, f"{where}.content[{j}]"))
        else:
            raise TranslationError(
                f"{where}.content[{j}]: tool results of type {kind!r} are not supported for this model"
            )
    return out


def _blocks(content: Any, where: str, hints: JSON) -> list[ir.Part]:
    if isinstance(content, str):
        return [ir.Text(content)]
    parts: list[ir.Part] = []
    for j, block in enumerate(content or ()):
        here = f"{where}.content[{j}]"
        if not isinstance(block, dict):
            raise TranslationError(f"{here}: each content block must be an object")
        if block.get("cache_control") is not None:
            hints["cache_control"] = True
        kind = block.get("type")
        if kind == "text":
            parts.append(ir.Text(str(block.get("text") or "")))
        elif kind == "image":
            parts.append(_image(block, here))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            parts.append(ir.ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), arguments))
        elif kind == "tool_result":
            content_parts = _result_content(block.get("content"), here)
            parts.append(ir.ToolResult(str(block.get("tool_use_id") or ""), content_parts, bool(block.get("is_error"))))
        elif kind == "thinking":
            parts.append(ir.Reasoning(str(block.get("thinking") or ""), block.get("signature")))
        elif kind == "redacted_thinking":
            parts.append(ir.Reasoning(opaque=str(block.get("data") or "")))
        else:
            raise TranslationError(f"{here}: content blocks of type {kind!r} are not supported for this model")
    return parts


def decode_request(body: JSON) -> ir.Request:
    """A Messages body (already validated) as the internal representation."""
    hints: JSON = {}
    messages: list[ir.Message] = []
    system = body.get("system")
    if system:
        parts = _blocks(system, "system", hints)
        messages.append(ir.Message("system", parts))
    names: dict[str, str] = {}
    for i, msg in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        parts = _blocks(msg.get("content"), where, hints)
        if msg.get("role") == "assistant":
            for part in parts:
                if isinstance(part, ir.ToolCall):
                    names[part.id] = part.name
            messages.append(ir.Message("assistant", parts))
            continue
        # A user turn's tool results come first (Anthropic requires it); they become tool turns of their own.
        rest: list[ir.Part] = []
        for part in parts:
            if isinstance(part, ir.ToolResult):
                part.name = names.get(part.call_id, "")
                messages.append(ir.Message("tool", [part]))
            else:
                rest.append(part)
        if rest or not any(isinstance(p, ir.ToolResult) for p in parts):
            messages.append(ir.Message("user", rest))
    request = ir.Request(model=str(body.get("model")), messages=messages, stream=bool(body.get("stream")))
    request.max_output = body.get("max_tokens")
    request.stop = list(body.get("stop_sequences") or ())
    request.sampling = {k: body[k] for k in ("temperature", "top_p", "top_k") if body.get(k) is not None}
    tools = body.get("tools")
    if tools:
        request.tools = [_decode_tool(tool, f"tools[{i}]", hints) for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        mode = choice.get("type")
        if mode in ("auto", "none"):
            request.tool_choice = ir.ToolChoice(mode)
        elif mode == "any":
            request.tool_choice = ir.ToolChoice("required")
        elif mode == "tool":
            request.tool_choice = ir.ToolChoice("tool", str(choice.get("name") or ""))
        if choice.get("disable_parallel_tool_use"):
            request.parallel_tool_calls = False
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        kind = thinking.get("type")
        if kind == "enabled":
            request.reasoning = ir.ReasoningConfig(budget=thinking.get("budget_tokens"))
        elif kind == "adaptive":
            request.reasoning = ir.ReasoningConfig()
        elif kind == "disabled":
            request.reasoning = ir.ReasoningConfig(enabled=False)
    output = body.get("output_config")
    if isinstance(output, dict):
        fmt = output.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            request.response_format = ir.ResponseFormat(fmt.get("schema"), strict=True)
        if output.get("effort"):
            effort = str(output["effort"])
            if request.reasoning is None:
                request.reasoning = ir.ReasoningConfig(effort=effort)
            else:
                request.reasoning.effort = effort
    for name in _HINTS:
        if body.get(name) is not None:
            hints[name] = body[name]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        hints["user"] = metadata["user_id"]
        hints.pop("metadata", None)
    for name in _REFUSED:
        if body.get(name):
            raise TranslationError(f"`{name}` is an Anthropic server-side feature: this model's upstream has none")
    request.hints = hints
    return request


def _decode_tool(tool: Any, where: str, hints: JSON) -> ir.Tool:
    if not isinstance(tool, dict):
        raise TranslationError(f"{where}: each tool must be an object")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        # bash, text_editor, computer, web_search, code_execution...: Anthropic's own tools, defined by it.
        raise TranslationError(
            f"{where}: the Anthropic tool {kind!r} exists only on Anthropic's API; this model's upstream has no "
            "equivalent (describe it as a custom tool with an input_schema instead)"
        )
    if tool.get("cache_control") is not None:
        hints["cache_control"] = True
    return ir.Tool(str(tool.get("name") or ""), tool.get("description"), tool.get("input_schema"), tool.get("strict"))


# --- upstream side: the request --------------------------------------------------------------------


def _encode_part(part: Any) -> JSON | None:
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ir.Image):
        if part.data is not None:
            return {"type": "image", "source": {"type": "base64", "media_type": part.media_type, "data": part.data}}
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    if isinstance(part, ir.ToolCall):
        arguments = args_to_object(part.arguments, "a tool call", TranslationError)
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": arguments}
    if isinstance(part, ir.ToolResult):
        content = [b for b in (_encode_part(c) for c in part.content) if b is not None]
        block: JSON = {"type": "tool_result", "tool_use_id": part.call_id, "content": content}
        if part.is_error:
            block["is_error"] = True
        return block
    if isinstance(part, ir.Reasoning):
        if part.opaque is not None and not part.text:
            return {"type": "redacted_thinking", "data": part.opaque}
        if part.signature:  # thinking without Anthropic's signature is refused by Anthropic: left out
            return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def encode_request(request: ir.Request, model: str, max_tokens: int, dropped: list[str]) -> tuple[str, JSON]:
    """(path, body) for an Anthropic Messages server; `max_tokens` (required there) is the reservation's."""
    system: list[str] = []
    messages: list[JSON] = []
    if request.prompt is not None:
        messages.append({"role": "user", "content": request.prompt})
        dropped.append("raw prompt (sent as a user turn)")
    for message in request.messages:
        if message.role == "system":
            system.append(ir.text_of(message.parts))
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = [b for b in (_encode_part(p) for p in message.parts) if b is not None]
        if message.role == "assistant" and any(
            isinstance(p, ir.Reasoning) and not p.signature and p.opaque is None for p in message.parts
        ):
            _drop(dropped, "reasoning of earlier turns (no Anthropic signature)")
        if messages and messages[-1]["role"] == role:
            previous = messages[-1]["content"]
            # Tool results go first in a user turn, as Anthropic requires.
            if role == "user" and message.role == "tool":
                messages[-1]["content"] = [
                    *[b for b in previous if b["type"] == "tool_result"],
                    *blocks,
                    *[b for b in previous if b["type"] != "tool_result"],
                ]
            else:
                previous.extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: JSON = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = "\n\n".join(system)
    if request.stop:
        body["stop_sequences"] = request.stop
    for key, value in request.sampling.items():
        if key in ("temperature", "top_p", "top_k"):
            body[key] = min(value, 1) if key == "temperature" and isinstance(value, int | float) else value
        else:
            _drop(dropped, key)
    if request.tools and not (request.tool_choice and request.tool_choice.mode == "none"):
        body["tools"] = [_tool(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None and request.tools:
        encoded: JSON = {"type": {"required": "any"}.get(choice.mode, choice.mode)}
        if choice.mode == "tool":
            encoded["name"] = choice.name
        if request.parallel_tool_calls is False and choice.mode != "none":
            encoded["disable_parallel_tool_use"] = True
        body["tool_choice"] = encoded
    elif request.parallel_tool_calls is False and request.tools:
        body["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    fmt = request.response_format
    if fmt is not None:
        if fmt.schema is None:
            _drop(dropped, "response_format (JSON mode without a schema)")
        else:
            body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema}}
    reasoning = request.reasoning
    if reasoning is not None:
        if not reasoning.enabled or reasoning.effort == "none":
            body["thinking"] = {"type": "disabled"}
        else:
            budget = reasoning.budget or _BUDGETS.get(reasoning.effort or "medium", 8192)
            budget = min(budget, max_tokens - 1)
            if budget >= MIN_THINKING_BUDGET:
                body["thinking"] = {"type": "enabled", "budget_tokens": budget}
                body.pop("temperature", None)  # Anthropic accepts no temperature with thinking
                body.pop("top_k", None)
            else:
                _drop(dropped, "reasoning (max_tokens too small for a thinking budget)")
    for key, value in request.hints.items():
        if key == "user":
            body["metadata"] = {"user_id": str(value)}
        elif key == "metadata" and isinstance(value, dict) and "user_id" in value:
            body["metadata"] = {"user_id": str(value["user_id"])}
        else:
            _drop(dropped, key)
    if request.suffix is not None:
        _drop(dropped, "suffix")
    body["stream"] = request.stream
    return MESSAGES_PATH, body


def _drop(dropped: list[str], name: str) -> None:
    if name not in dropped:
        dropped.append(name)


def _tool(tool: ir.Tool) -> JSON:
    out: JSON = {"name": tool.name, "input_schema": tool.parameters or {"type": "object", "properties": {}}}
    if tool.description:
        out["description"] = tool.description
    if tool.strict is not None:
        out["strict"] = tool.strict
    return out


# --- upstream side: the answer ---------------------------------------------------------------------


def decode_usage(usage: Any) -> ir.Usage | None:
    """Anthropic's usage (input_tokens excludes the cached parts) in the representation's terms."""
    if not isinstance(usage, dict):
        return None
    cached = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    return ir.Usage(
        input=(usage.get("input_tokens") or 0) + cached + written,
        output=usage.get("output_tokens") or 0,
        cached=cached,
        cache_write=written,
    )


def decode_result(data: JSON) -> ir.Result:
    if data.get("type") == "error":
        raise UpstreamStreamError(error_message(data))
    parts: list[ir.Part] = []
    for block in data.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            parts.append(ir.Text(block.get("text") or ""))
        elif kind == "tool_use":
            parts.append(
                ir.ToolCall(block["id"], block.get("name", ""), orjson.dumps(block.get("input") or {}).decode())
            )
        elif kind == "thinking":
            parts.append(ir.Reasoning(block.get("thinking") or "", block.get("signature")))
        elif kind == "redacted_thinking":
            parts.append(ir.Reasoning(opaque=block.get("data")))
    stop = _STOPS.get(data.get("stop_reason"), "end")
    return ir.Result(parts, stop, data.get("stop_sequence"), decode_usage(data.get("usage")), data.get("id"))


class SseDecoder:
    """Messages stream events -> events of the representation."""

    __slots__ = ("_blocks", "_usage", "stop")

    def __init__(self) -> None:
        self._blocks: dict[int, str] = {}  # block index -> its type
        self._usage: JSON = {}
        self.stop: ir.Finish | None = None

    @property
    def usage(self) -> ir.Usage | None:
        return decode_usage(self._usage) if self._usage else None

    def feed(self, line: bytes) -> list[ir.Event]:
        if not line.startswith(b"data:"):
            return []  # event: lines name what the data line says again
        payload = line[5:].strip()
        if not payload:
            return []
        event = orjson.loads(payload)
        kind = event.get("type")
        if kind == "content_block_delta":
            index = event.get("index", 0)
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return [ir.TextDelta(delta.get("text") or "")]
            if dtype == "input_json_delta":
                fragment = delta.get("partial_json") or ""
                return [ir.ToolArgsDelta(index, fragment)] if fragment else []
            if dtype == "thinking_delta":
                return [ir.ReasoningDelta(delta.get("thinking") or "")]
            if dtype == "signature_delta":
                return [ir.ReasoningDelta(signature=delta.get("signature") or "")]
            return []
        if kind == "content_block_start":
            index = event.get("index", 0)
            block = event.get("content_block") or {}
            btype = self._blocks[index] = block.get("type", "")
            if btype == "tool_use":
                events: list[ir.Event] = [ir.ToolCallStart(index, block.get("id", ""), block.get("name", ""))]
                if block.get("input"):
                    events.append(ir.ToolArgsDelta(index, orjson.dumps(block["input"]).decode()))
                return events
            if btype == "text" and block.get("text"):
                return [ir.TextDelta(block["text"])]
            if btype == "thinking" and block.get("thinking"):
                return [ir.ReasoningDelta(block["thinking"])]
            if btype == "redacted_thinking":
                return [ir.ReasoningDelta(opaque=block.get("data") or "")]
            return []
        if kind == "message_start":
            self._usage.update((event.get("message") or {}).get("usage") or {})
            return []
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop = ir.Finish(_STOPS.get(delta["stop_reason"], "end"), delta.get("stop_sequence"))
                return [self.stop]
            return []
        if kind == "error":
            raise UpstreamStreamError(error_message(event))
        return []  # ping, content_block_stop, message_stop


# --- client side: the answer -----------------------------------------------------------------------


def usage_object(usage: ir.Usage) -> JSON:
    return {
        "input_tokens": max(0, usage.input - usage.cached - usage.cache_write),
        "output_tokens": usage.output,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
    }


def _block(part: Any) -> JSON | None:
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, ir.ToolCall):
        arguments = args_to_object(part.arguments, "upstream answer", UpstreamStreamError)
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": arguments}
    if isinstance(part, ir.Reasoning):
        if part.opaque is not None and not part.text:
            return {"type": "redacted_thinking", "data": part.opaque}
        return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    return None


def encode_result(result: ir.Result, *, model: str, message_id: str) -> JSON:
    content = [b for b in (_block(p) for p in result.parts) if b is not None]
    stop = result.stop
    if stop == "end" and any(b["type"] == "tool_use" for b in content):
        stop = "tool_use"
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS[stop],
        "stop_sequence": result.stop_sequence if stop == "stop_sequence" else None,
        "usage": usage_object(result.usage or ir.Usage()),
    }


def sse(name: str, data: JSON) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class SseEncoder:
    """Events -> Messages stream events. Blocks open and close as the kind of content changes."""

    media_type = "text/event-stream"
    __slots__ = ("_block", "_calls", "_finish", "_id", "_index", "_model", "_prompt", "_started")

    def __init__(self, *, model: str, message_id: str, prompt_estimate: int = 0) -> None:
        self._id = message_id
        self._model = model
        self._prompt = prompt_estimate
        self._started = False
        self._index = -1
        self._block: str | None = None  # the open block's type
        self._calls: dict[int, int] = {}  # event tool index -> block index
        self._finish: ir.Finish | None = None

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: JSON = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The prompt's count comes with message_delta at the end (an upstream of another kind says it last).
            "usage": {"input_tokens": self._prompt, "output_tokens": 0},
        }
        # Anthropic sends a ping right after message_start; clients that wait for one find it here too.
        return sse("message_start", {"type": "message_start", "message": message}) + self.ping()

    def _open(self, kind: str, block: JSON) -> bytes:
        out = self._close()
        self._index += 1
        self._block = kind
        return out + sse(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: JSON) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def encode(self, events: list[ir.Event]) -> bytes:
        out = [self.start()]
        for event in events:
            if isinstance(event, ir.TextDelta):
                if self._block != "text":
                    out.append(self._open("text", {"type": "text", "text": ""}))
                if event.text:
                    out.append(self._delta({"type": "text_delta", "text": event.text}))
            elif isinstance(event, ir.ReasoningDelta):
                if event.opaque is not None and not event.text:
                    out.append(self._open("redacted_thinking", {"type": "redacted_thinking", "data": event.opaque}))
                    out.append(self._close())
                    continue
                if self._block != "thinking":
                    out.append(self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
                if event.text:
                    out.append(self._delta({"type": "thinking_delta", "thinking": event.text}))
                if event.signature:
                    out.append(self._delta({"type": "signature_delta", "signature": event.signature}))
            elif isinstance(event, ir.ToolCallStart):
                block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                out.append(self._open("tool_use", block))
                self._calls[event.index] = self._index
            elif isinstance(event, ir.ToolArgsDelta):
                if self._calls.get(event.index) == self._index and self._block == "tool_use" and event.fragment:
                    out.append(self._delta({"type": "input_json_delta", "partial_json": event.fragment}))
            else:
                self._finish = event
        return b"".join(out)

    def finish(self, usage: ir.Usage | None) -> bytes:
        finish = self._finish or ir.Finish("end")
        stop = finish.stop
        if stop == "end" and self._calls:
            stop = "tool_use"
        counts = usage_object(usage) if usage is not None else {"output_tokens": 0}
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS[stop],
                "stop_sequence": finish.stop_sequence if stop == "stop_sequence" else None,
            },
            "usage": counts,
        }
        return (
            self.start() + self._close() + sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})
        )

    def ping(self) -> bytes:
        return sse("ping", {"type": "ping"})

    def error(self, message: str, code: str) -> bytes:
        return sse("error", {"type": "error", "error": {"type": error_type_for_code(code), "message": message}})


def error_type_for_code(code: str) -> str:
    """The Anthropic error type for a mid-stream failure (its status is already 200)."""
    if code == "upstream_timeout":
        return "timeout_error"
    if code == "upstream_rate_limited":
        return "rate_limit_error"
    return "api_error"
