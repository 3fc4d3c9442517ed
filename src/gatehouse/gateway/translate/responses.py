"""OpenAI's Responses API (client side) <-> the internal representation.

`decode_request` turns a /v1/responses body (with the items of the conversation it continues, when it names a
`previous_response_id`) into a Request; `Render` builds the Response object, whole (`response`) or as the typed
stream of events (`StreamEncoder`). Shapes: OpenAI's API reference, as the official `openai` package's types
(openai.types.responses) carry it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gatehouse.gateway import ir
from gatehouse.gateway.translate.common import JSON, TranslationError
from gatehouse.gateway.translate.openai import image_from_url

# Tools that run on OpenAI's servers: no other upstream has them, and dropping one would change the answer.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "custom",
    }
)
# Optional hints: passed where the upstream has them, else dropped and named in the answer's header.
HINTS = (
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "include",
    "truncation",
    "top_logprobs",
    "max_tool_calls",
    "context_management",
    "stream_options",
)
# What would change what a request means if dropped: refused with a 400 naming it.
REFUSED = {
    "background": "background responses (poll later) are not supported by Gatehouse",
    "conversation": "server-side conversations are not supported by Gatehouse: use previous_response_id",
    "prompt": "stored prompt templates exist only on OpenAI's platform",
}
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# --- the request -----------------------------------------------------------------------------------


def input_items(body: JSON) -> list[JSON]:
    """The request's input as a list of items, each with an id (what GET .../input_items lists)."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        items: list[JSON] = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    elif isinstance(value, list):
        items = [dict(item) if isinstance(item, dict) else item for item in value]
    else:
        raise TranslationError("`input` must be a string or a list of items")
    for item in items:
        if isinstance(item, dict) and "id" not in item:
            kind = item.get("type", "message")
            prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
            item["id"] = new_id(prefix.get(kind, "item"))
    return items


def _content(content: Any, where: str) -> list[ir.Part]:
    if isinstance(content, str):
        return [ir.Text(content)]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list of content parts")
    parts: list[ir.Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append(ir.Text(str(part.get("text") or "")))
        elif kind == "refusal":
            parts.append(ir.Text(str(part.get("refusal") or "")))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise TranslationError(
                    f"{where}.content[{j}]: images by file_id exist only on OpenAI's platform; send image_url"
                )
            parts.append(image_from_url(url))
        else:
            raise TranslationError(f"{where}.content[{j}]: content of type {kind!r} is not supported for this model")
    return parts


def _decode_items(items: list[Any]) -> list[ir.Message]:
    messages: list[ir.Message] = []
    names: dict[str, str] = {}

    def assistant() -> ir.Message:
        if messages and messages[-1].role == "assistant":
            return messages[-1]
        messages.append(ir.Message("assistant", []))
        return messages[-1]

    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            parts = _content(item.get("content"), where)
            if role in ("system", "developer"):
                messages.append(ir.Message("system", parts))
            elif role == "assistant":
                assistant().parts.extend(parts)
            elif role == "user":
                messages.append(ir.Message("user", parts))
            else:
                raise TranslationError(f"{where}.role must be user, assistant, system or developer")
        elif kind == "function_call":
            call_id = str(item.get("call_id") or "")
            names[call_id] = str(item.get("name") or "")
            assistant().parts.append(ir.ToolCall(call_id, names[call_id], str(item.get("arguments") or "")))
        elif kind == "function_call_output":
            call_id = str(item.get("call_id") or "")
            output = item.get("output")
            content = [ir.Text(output)] if isinstance(output, str) else _content(output, where)
            parts_ = [p for p in content if isinstance(p, ir.Text | ir.Image)]
            messages.append(ir.Message("tool", [ir.ToolResult(call_id, parts_, name=names.get(call_id, ""))]))
        elif kind == "reasoning":
            text = "".join(str(c.get("text") or "") for c in item.get("content") or () if isinstance(c, dict))
            if not text:
                text = "".join(str(s.get("text") or "") for s in item.get("summary") or () if isinstance(s, dict))
            opaque = item.get("encrypted_content")
            assistant().parts.append(ir.Reasoning(text, signature=opaque if text else None, opaque=opaque))
        elif kind == "item_reference":
            raise TranslationError(f"{where}: item references are not supported; send the item itself")
        else:
            raise TranslationError(f"{where}: items of type {kind!r} are not supported for this model")
    return messages


def decode_request(body: JSON, history: list[JSON], items: list[JSON]) -> ir.Request:
    """The request, continuing `history` (the items of the response chain it names) with its own `items`."""
    for name, why in REFUSED.items():
        if body.get(name):
            raise TranslationError(f"`{name}`: {why}")
    messages: list[ir.Message] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append(ir.Message("system", [ir.Text(instructions)]))
    messages.extend(_decode_items([*history, *items]))
    request = ir.Request(model=str(body.get("model")), messages=messages, stream=bool(body.get("stream")))
    limit = body.get("max_output_tokens")
    request.max_output = limit if isinstance(limit, int) else None
    request.sampling = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
    tools: list[ir.Tool] = []
    for i, tool in enumerate(body.get("tools") or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            tools.append(
                ir.Tool(
                    str(tool.get("name") or ""), tool.get("description"), tool.get("parameters"), tool.get("strict")
                )
            )
        elif kind in HOSTED_TOOLS or kind:
            raise TranslationError(
                f"tools[{i}]: the {kind!r} tool runs on OpenAI's servers; this model's upstream has no equivalent "
                "(only function tools can be translated)"
            )
        else:
            raise TranslationError(f"tools[{i}] needs a `type` (function)")
    request.tools = tools
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        request.tool_choice = ir.ToolChoice(choice)
    elif isinstance(choice, dict):
        if choice.get("type") == "function":
            request.tool_choice = ir.ToolChoice("tool", str(choice.get("name") or ""))
        elif choice.get("type") == "allowed_tools":
            request.tool_choice = ir.ToolChoice("required" if choice.get("mode") == "required" else "auto")
            request.hints["tool_choice.allowed_tools"] = choice.get("tools")
        else:
            raise TranslationError(f"tool_choice of type {choice.get('type')!r} is not supported for this model")
    if isinstance(body.get("parallel_tool_calls"), bool):
        request.parallel_tool_calls = body["parallel_tool_calls"]
    text = body.get("text")
    if isinstance(text, dict):
        fmt = text.get("format")
        if isinstance(fmt, dict):
            if fmt.get("type") == "json_object":
                request.response_format = ir.ResponseFormat()
            elif fmt.get("type") == "json_schema":
                request.response_format = ir.ResponseFormat(
                    fmt.get("schema"), str(fmt.get("name") or "response"), fmt.get("strict")
                )
        if text.get("verbosity"):
            request.hints["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and (reasoning.get("effort") or reasoning.get("summary")):
        effort = reasoning.get("effort")
        request.reasoning = ir.ReasoningConfig(
            enabled=effort != "none",
            effort=effort,
            summary=reasoning.get("summary") or reasoning.get("generate_summary"),
        )
    for name in HINTS:
        if body.get(name) is not None:
            request.hints[name] = body[name]
    return request


# --- the answer ------------------------------------------------------------------------------------


def usage_object(usage: ir.Usage) -> JSON:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


@dataclass
class Render:
    """What a Response object repeats of its request, and its identity."""

    body: JSON
    model: str
    response_id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    previous_response_id: str | None = None

    def response(self, output: list[JSON], status: str, usage: ir.Usage | None, stop: ir.StopReason = "end") -> JSON:
        body = self.body
        reasoning: JSON = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
        out: JSON = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": INCOMPLETE_REASONS[stop]} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "metadata": body.get("metadata") or {},
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "service_tier": "default",
            "store": body.get("store", True) is not False,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "usage": usage_object(usage) if usage is not None else None,
            "user": body.get("user"),
        }
        if status in ("completed", "incomplete", "failed"):
            out["completed_at"] = int(time.time()) if status == "completed" else None
        return out

    def whole(self, result: ir.Result) -> JSON:
        """The Response object of a whole answer."""
        output = [item for part in result.parts if (item := output_item(part, "completed")) is not None]
        status = "incomplete" if result.stop in INCOMPLETE_REASONS else "completed"
        return self.response(output, status, result.usage or ir.Usage(), result.stop)


def output_item(part: Any, status: str) -> JSON | None:
    if isinstance(part, ir.Text):
        return message_item(new_id("msg"), part.text, status)
    if isinstance(part, ir.ToolCall):
        return function_item(new_id("fc"), part.id, part.name, part.arguments or "{}", status)
    if isinstance(part, ir.Reasoning):
        return reasoning_item(new_id("rs"), part, status)
    return None


def message_item(item_id: str, text: str | None, status: str) -> JSON:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> JSON:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(item_id: str, part: ir.Reasoning | None, status: str) -> JSON:
    item: JSON = {"type": "reasoning", "id": item_id, "summary": [], "status": status}
    if part is not None:
        item["content"] = [{"type": "reasoning_text", "text": part.text}] if part.text else []
        opaque = part.signature or part.opaque
        if opaque:
            item["encrypted_content"] = opaque
    return item


class StreamEncoder:
    """Events -> the Responses API's typed stream: response.created ... response.completed. The whole answer
    is gathered too (`result`), for the response.completed event and for storing it."""

    media_type = "text/event-stream"

    def __init__(self, render: Render) -> None:
        self.render = render
        self.sequence = 0
        self.output: list[JSON] = []  # finished items
        self.collector = ir.Collector()
        self._open: JSON | None = None  # the item being streamed
        self._text = ""
        self._started = False
        self._calls: dict[int, JSON] = {}
        self.final: JSON | None = None  # the Response object, once finished

    def _event(self, kind: str, data: JSON) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        snapshot = self.render.response([], "in_progress", None)
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def _index(self) -> int:
        return len(self.output)

    def _close(self) -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        index = self._index()
        out = b""
        kind = item["type"]
        if kind == "message":
            part = {"type": "output_text", "text": self._text, "annotations": [], "logprobs": []}
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out += self._event("response.output_text.done", {**common, "text": self._text, "logprobs": []})
            out += self._event("response.content_part.done", {**common, "part": part})
            item = message_item(item["id"], self._text, "completed")
        elif kind == "function_call":
            common = {"item_id": item["id"], "output_index": index}
            out += self._event(
                "response.function_call_arguments.done", {**common, "arguments": self._text, "name": item["name"]}
            )
            item = function_item(item["id"], item["call_id"], item["name"], self._text, "completed")
        else:
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            if self._text:
                out += self._event("response.reasoning_text.done", {**common, "text": self._text})
            item = {**item, "status": "completed", "content": [{"type": "reasoning_text", "text": self._text}]}
        self._text = ""
        self.output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def _begin(self, item: JSON) -> bytes:
        out = self._close()
        self._open = item
        self._text = ""
        out += self._event("response.output_item.added", {"output_index": self._index(), "item": item})
        if item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            common = {"item_id": item["id"], "output_index": self._index(), "content_index": 0}
            out += self._event("response.content_part.added", {**common, "part": part})
        return out

    def _item(self, kind: str, out: list[bytes]) -> JSON:
        """The open item, if it is of `kind`; else a new one of that kind, opened (its events added to `out`)."""
        item = self._open
        if item is None or item["type"] != kind:
            item = (
                message_item(new_id("msg"), None, "in_progress")
                if kind == "message"
                else reasoning_item(new_id("rs"), None, "in_progress")
            )
            out.append(self._begin(item))
        return item

    def encode(self, events: list[ir.Event]) -> bytes:
        self.collector.add(events)
        out = [self.start()]
        for event in events:
            if isinstance(event, ir.TextDelta):
                item = self._item("message", out)
                self._text += event.text
                common = {"item_id": item["id"], "output_index": self._index(), "content_index": 0}
                out.append(self._event("response.output_text.delta", {**common, "delta": event.text, "logprobs": []}))
            elif isinstance(event, ir.ReasoningDelta):
                item = self._item("reasoning", out)
                if event.signature or event.opaque:
                    item["encrypted_content"] = (item.get("encrypted_content") or "") + (
                        event.signature or event.opaque or ""
                    )
                if event.text:
                    self._text += event.text
                    common = {"item_id": item["id"], "output_index": self._index(), "content_index": 0}
                    out.append(self._event("response.reasoning_text.delta", {**common, "delta": event.text}))
            elif isinstance(event, ir.ToolCallStart):
                fc = function_item(new_id("fc"), event.id, event.name, "", "in_progress")
                out.append(self._begin(fc))
                self._calls[event.index] = fc
            elif isinstance(event, ir.ToolArgsDelta) and event.fragment:
                open_item = self._open
                if open_item is not None and self._calls.get(event.index) is open_item:
                    item = open_item
                    self._text += event.fragment
                    common = {"item_id": item["id"], "output_index": self._index()}
                    delta = {**common, "delta": event.fragment}
                    out.append(self._event("response.function_call_arguments.delta", delta))
        return b"".join(out)

    def finish(self, usage: ir.Usage | None) -> bytes:
        out = self.start() + self._close()
        finish = self.collector.finish
        stop = finish.stop if finish is not None else "end"
        status = "incomplete" if stop in INCOMPLETE_REASONS else "completed"
        self.final = self.render.response(self.output, status, usage or ir.Usage(), stop)
        return out + self._event(f"response.{status}", {"response": self.final})

    def ping(self) -> bytes:
        return b": ping\n\n"

    def error(self, message: str, code: str) -> bytes:
        failed = self.render.response(self.output, "failed", None)
        failed["error"] = {"code": "server_error", "message": message}
        out = self.start() + self._event("error", {"code": code, "message": message, "param": None})
        return out + self._event("response.failed", {"response": failed})
