"""Ollama's /api/chat and /api/generate <-> the internal representation, both sides.

Client side: `decode_chat` / `decode_generate`, `encode_chat_result` / `encode_generate_result`, and
`NdjsonEncoder` for streams. Upstream side: `encode_request` (chat, or generate with raw for a raw prompt),
`decode_result` and `NdjsonDecoder`. Shapes: Ollama's API reference, as the official `ollama` package's types
carry it. Ollama gives tool calls no ids: they are made up here (`call_<request id>_<n>`), and tool results
are matched to calls by tool name, else in order.
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
    args_to_string,
    error_message,
    image_mime,
    parse_data_url,
    rfc3339_now,
)
from gatehouse.gateway.translate.openai import decode_tools  # Ollama's function tools have OpenAI's shape

CHAT_PATH = "/api/chat"
GENERATE_PATH = "/api/generate"
SAMPLING = ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")
_NATIVE = ("keep_alive",)


# --- client side: the request ----------------------------------------------------------------------


def _images(images: Any) -> list[ir.Part]:
    out: list[ir.Part] = []
    for image in images or ():
        if not isinstance(image, str):
            raise TranslationError("images must be base64 strings")
        parsed = parse_data_url(image)
        out.append(ir.Image(parsed[1], parsed[0]) if parsed else ir.Image(image, image_mime(image)))
    return out


def decode_chat(body: JSON) -> ir.Request:
    """An /api/chat body as the internal representation."""
    messages: list[ir.Message] = []
    counter = 0
    pending: list[tuple[str, str]] = []  # (id, name) of tool calls not yet answered
    for msg in body.get("messages") or ():
        if not isinstance(msg, dict):
            raise TranslationError("each message must be an object")
        role = msg.get("role")
        content = msg.get("content") or ""
        parts: list[ir.Part] = [ir.Text(content)] if content else []
        parts.extend(_images(msg.get("images")))
        if role == "system":
            messages.append(ir.Message("system", parts))
        elif role == "assistant":
            if msg.get("thinking"):
                parts.insert(0, ir.Reasoning(str(msg["thinking"])))
            calls = msg.get("tool_calls") or ()
            ids: list[str] = []
            for call in calls:
                call_id = call.get("id")
                if not call_id:
                    call_id = f"call_{counter}"
                    counter += 1
                ids.append(call_id)
                fn = call.get("function") or {}
                parts.append(ir.ToolCall(call_id, fn.get("name", ""), args_to_string(fn.get("arguments"))))
            if calls:
                pending = [(ids[j], (c.get("function") or {}).get("name", "")) for j, c in enumerate(calls)]
            messages.append(ir.Message("assistant", parts))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            name = msg.get("tool_name") or msg.get("name") or ""
            if call_id:
                pending = [p for p in pending if p[0] != call_id]
            else:
                match = next((p for p in pending if p[1] == name), None) if name else None
                if match is None and pending:
                    match = pending[0]
                if match is not None:
                    pending.remove(match)
                    call_id, name = match[0], name or match[1]
                else:
                    call_id = f"call_{counter}"
                    counter += 1
            content_parts = [p for p in parts if isinstance(p, ir.Text | ir.Image)]
            messages.append(ir.Message("tool", [ir.ToolResult(call_id, content_parts, name=name)]))
        else:
            messages.append(ir.Message("user", parts))
    request = ir.Request(model=str(body.get("model")), messages=messages, stream=body.get("stream") is not False)
    _decode_options(body, request)
    tools = body.get("tools")
    if tools:
        request.tools = decode_tools(tools)
    return request


def decode_generate(body: JSON) -> ir.Request:
    """An /api/generate body: a raw continuation with `raw`, else one user turn (with its system prompt)."""
    prompt = body.get("prompt") or ""
    request = ir.Request(model=str(body.get("model")), messages=[], stream=body.get("stream") is not False)
    if body.get("raw"):
        request.prompt = prompt
    else:
        messages: list[ir.Message] = []
        if body.get("system"):
            messages.append(ir.Message("system", [ir.Text(str(body["system"]))]))
        parts: list[ir.Part] = [ir.Text(prompt)] if prompt else []
        parts.extend(_images(body.get("images")))
        messages.append(ir.Message("user", parts))
        request.messages = messages
    if body.get("suffix"):
        request.suffix = str(body["suffix"])
    for name in ("template", "context"):
        if body.get(name):
            request.hints[name] = body[name]
    _decode_options(body, request)
    return request


def _decode_options(body: JSON, request: ir.Request) -> None:
    options = body.get("options") or {}
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict >= 0:
        request.max_output = num_predict
    request.sampling = {k: options[k] for k in SAMPLING if options.get(k) is not None}
    stop = options.get("stop")
    if stop:
        request.stop = [stop] if isinstance(stop, str) else list(stop)
    others = {k: v for k, v in options.items() if k not in SAMPLING and k not in ("num_predict", "stop")}
    if others:
        request.native["options"] = others
    for name in _NATIVE:
        if body.get(name) is not None:
            request.native[name] = body[name]
    fmt = body.get("format")
    if fmt == "json":
        request.response_format = ir.ResponseFormat()
    elif isinstance(fmt, dict):
        request.response_format = ir.ResponseFormat(fmt)
    elif fmt:
        raise TranslationError(f'format {fmt!r} is not supported; use "json" or a JSON schema object')
    think = body.get("think")
    if think is not None:
        if isinstance(think, str):
            request.reasoning = ir.ReasoningConfig(effort=think)
        else:
            request.reasoning = ir.ReasoningConfig(enabled=bool(think))
    if body.get("logprobs"):
        request.hints["logprobs"] = True


# --- upstream side: the request --------------------------------------------------------------------


def _encode_message(message: ir.Message, dropped: list[str]) -> list[JSON]:
    if message.role == "tool":
        out = []
        for result in message.parts:
            if isinstance(result, ir.ToolResult):
                entry: JSON = {"role": "tool", "content": ir.text_of(result.content)}
                if result.name:
                    entry["tool_name"] = result.name
                out.append(entry)
        return out
    texts: list[str] = []
    images: list[str] = []
    calls: list[JSON] = []
    thinking = ""
    for part in message.parts:
        if isinstance(part, ir.Text):
            texts.append(part.text)
        elif isinstance(part, ir.Image):
            if part.data is None:
                url = part.url or ""
                scheme = url.split(":", 1)[0] if ":" in url else "relative"
                raise TranslationError(
                    f"image URLs ({scheme}) are not supported for this model; "
                    "send the image inline as a base64 data: URL"
                )
            images.append(part.data)
        elif isinstance(part, ir.ToolCall):
            arguments = args_to_object(part.arguments, "a tool call", TranslationError)
            calls.append({"function": {"name": part.name, "arguments": arguments}})
        elif isinstance(part, ir.Reasoning):
            thinking += part.text
    entry = {"role": message.role, "content": "\n".join(texts)}
    if images:
        entry["images"] = images
    if calls:
        entry["tool_calls"] = calls
    if thinking:
        entry["thinking"] = thinking
    return [entry]


def encode_request(request: ir.Request, model: str, dropped: list[str]) -> tuple[str, JSON]:
    """(path, body) for an Ollama server; what it cannot take is named in `dropped`."""
    body: JSON
    if request.prompt is not None:
        body = {"model": model, "prompt": request.prompt, "raw": True}
        path = GENERATE_PATH
    else:
        messages: list[JSON] = []
        for message in request.messages:
            messages.extend(_encode_message(message, dropped))
        body = {"model": model, "messages": messages}
        path = CHAT_PATH
        if request.tools and not (request.tool_choice and request.tool_choice.mode == "none"):
            body["tools"] = [_tool(tool) for tool in request.tools]
            if request.tool_choice is not None and request.tool_choice.mode != "auto":
                dropped.append("tool_choice")
    if request.suffix is not None:
        if path == GENERATE_PATH:
            body["suffix"] = request.suffix
        else:
            dropped.append("suffix")
    body["stream"] = request.stream
    options: JSON = dict(request.native.get("options") or {})
    if request.max_output is not None:
        options["num_predict"] = request.max_output
    options.update(request.sampling)
    if request.stop:
        options["stop"] = request.stop
    if options:
        body["options"] = options
    fmt = request.response_format
    if fmt is not None:
        body["format"] = fmt.schema if fmt.schema is not None else "json"
    reasoning = request.reasoning
    if reasoning is not None:
        body["think"] = (reasoning.effort or True) if reasoning.enabled else False
        if reasoning.effort in ("none", "minimal"):
            body["think"] = False
    for name in _NATIVE:
        if name in request.native:
            body[name] = request.native[name]
    for name in request.hints:
        if name not in dropped:
            dropped.append(name)
    return path, body


def _tool(tool: ir.Tool) -> JSON:
    fn: JSON = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


# --- upstream side: the answer ---------------------------------------------------------------------


def decode_usage(obj: JSON) -> ir.Usage | None:
    if obj.get("done") is False:
        return None
    prompt, completion = obj.get("prompt_eval_count"), obj.get("eval_count")
    if prompt is None and completion is None:
        return None
    return ir.Usage(input=prompt or 0, output=completion or 0)


def _stop(obj: JSON, called: bool) -> ir.StopReason:
    if called:
        return "tool_use"
    return "length" if obj.get("done_reason") == "length" else "end"


def decode_result(data: JSON, *, call_prefix: str) -> ir.Result:
    """A whole /api/chat or /api/generate answer; tool calls get ids `<call_prefix><n>`."""
    if data.get("error") is not None:
        raise UpstreamStreamError(error_message(data["error"]))
    message = data.get("message")
    parts: list[ir.Part] = []
    if isinstance(message, dict):
        if message.get("thinking"):
            parts.append(ir.Reasoning(message["thinking"]))
        if message.get("content"):
            parts.append(ir.Text(message["content"]))
        for i, call in enumerate(message.get("tool_calls") or ()):
            fn = call.get("function") or {}
            call_id = call.get("id") or f"{call_prefix}{i}"
            parts.append(ir.ToolCall(call_id, fn.get("name", ""), args_to_string(fn.get("arguments"))))
    else:
        if data.get("thinking"):
            parts.append(ir.Reasoning(data["thinking"]))
        if data.get("response"):
            parts.append(ir.Text(data["response"]))
    called = any(type(p) is ir.ToolCall for p in parts)
    return ir.Result(parts, _stop(data, called), usage=decode_usage(data))


class NdjsonDecoder:
    """Ollama stream objects (chat or generate) -> events."""

    __slots__ = ("_call_prefix", "_calls", "done", "usage")

    def __init__(self, *, call_prefix: str) -> None:
        self._call_prefix = call_prefix
        self._calls = 0
        self.usage: ir.Usage | None = None
        self.done = False

    def feed(self, line: bytes) -> list[ir.Event]:
        if not line.strip():
            return []
        return self.feed_object(orjson.loads(line))

    def feed_object(self, event: JSON) -> list[ir.Event]:
        if event.get("error") is not None:
            raise UpstreamStreamError(error_message(event["error"]))
        if self.done:
            return []
        out: list[ir.Event] = []
        message = event.get("message")
        holder = message if isinstance(message, dict) else event
        if holder.get("thinking"):
            out.append(ir.ReasoningDelta(holder["thinking"]))
        content = holder.get("content") if message is not None else event.get("response")
        if content:
            out.append(ir.TextDelta(content))
        if isinstance(message, dict):
            for call in message.get("tool_calls") or ():
                fn = call.get("function") or {}
                index = self._calls
                self._calls += 1
                call_id = call.get("id") or f"{self._call_prefix}{index}"
                out.append(ir.ToolCallStart(index, call_id, fn.get("name", "")))
                out.append(ir.ToolArgsDelta(index, args_to_string(fn.get("arguments"))))
        if event.get("done"):
            self.done = True
            self.usage = decode_usage(event)
            out.append(ir.Finish(_stop(event, self._calls > 0)))
        return out


# --- client side: the answer -----------------------------------------------------------------------


def _final_fields(out: JSON, stop: ir.StopReason, usage: ir.Usage | None) -> JSON:
    out["done"] = True
    out["done_reason"] = "length" if stop == "length" else "stop"
    out["total_duration"] = 0
    out["load_duration"] = 0
    if usage is not None:
        out["prompt_eval_count"] = usage.input
    out["prompt_eval_duration"] = 0
    if usage is not None:
        out["eval_count"] = usage.output
    out["eval_duration"] = 0
    return out


def _message(parts: list[Any]) -> JSON:
    message: JSON = {"role": "assistant", "content": ir.text_of(parts)}
    thinking = "".join(p.text for p in parts if type(p) is ir.Reasoning)
    if thinking:
        message["thinking"] = thinking
    calls = [p for p in parts if type(p) is ir.ToolCall]
    if calls:
        message["tool_calls"] = [
            {
                "function": {
                    "name": c.name,
                    "arguments": args_to_object(c.arguments, "upstream answer", UpstreamStreamError),
                }
            }
            for c in calls
        ]
    return message


def _arguments(raw: str, where: str) -> JSON:
    return args_to_object(raw, where, UpstreamStreamError)


def encode_chat_result(result: ir.Result, *, model: str) -> JSON:
    out: JSON = {"model": model, "created_at": rfc3339_now(), "message": _message(result.parts)}
    return _final_fields(out, result.stop, result.usage)


def encode_generate_result(result: ir.Result, *, model: str) -> JSON:
    out: JSON = {"model": model, "created_at": rfc3339_now(), "response": ir.text_of(result.parts)}
    thinking = "".join(p.text for p in result.parts if type(p) is ir.Reasoning)
    if thinking:
        out["thinking"] = thinking
    return _final_fields(out, result.stop, result.usage)


class NdjsonEncoder:
    """Events -> Ollama stream objects, for /api/chat (`generate` False) or /api/generate. Ollama sends whole tool
    calls, so their argument fragments are gathered until the call is complete."""

    media_type = "application/x-ndjson"
    __slots__ = ("_generate", "_model", "_stop", "_tools")

    def __init__(self, *, model: str, generate: bool = False) -> None:
        self._model = model
        self._generate = generate
        self._stop: ir.StopReason = "end"
        self._tools: dict[int, list[Any]] = {}  # index -> [name, argument fragments]

    def _piece(self, content: str = "", thinking: str = "", calls: list[JSON] | None = None) -> JSON:
        if self._generate:
            obj: JSON = {"model": self._model, "created_at": rfc3339_now(), "response": content, "done": False}
            if thinking:
                obj["thinking"] = thinking
            return obj
        message: JSON = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        return {"model": self._model, "created_at": rfc3339_now(), "message": message, "done": False}

    def _flush_tools(self) -> list[JSON]:
        if not self._tools:
            return []
        calls = [
            {
                "function": {
                    "name": name,
                    "arguments": args_to_object("".join(parts), "upstream stream", UpstreamStreamError),
                }
            }
            for name, parts in (self._tools[i] for i in sorted(self._tools))
        ]
        self._tools = {}
        return [] if self._generate else [self._piece(calls=calls)]

    def objects(self, events: list[ir.Event]) -> list[JSON]:
        out: list[JSON] = []
        for event in events:
            if isinstance(event, ir.TextDelta):
                out.append(self._piece(event.text))
            elif isinstance(event, ir.ReasoningDelta):
                if event.text:
                    out.append(self._piece(thinking=event.text))
            elif isinstance(event, ir.ToolCallStart):
                self._tools[event.index] = [event.name, []]
            elif isinstance(event, ir.ToolArgsDelta):
                slot = self._tools.get(event.index)
                if slot is not None:
                    slot[1].append(event.fragment)
            else:
                self._stop = event.stop
                out.extend(self._flush_tools())
        return out

    def final_objects(self, usage: ir.Usage | None) -> list[JSON]:
        out = self._flush_tools()
        final = self._piece()
        out.append(_final_fields(final, self._stop, usage))
        return out

    def encode(self, events: list[ir.Event]) -> bytes:
        return b"".join(orjson.dumps(o) + b"\n" for o in self.objects(events))

    def finish(self, usage: ir.Usage | None) -> bytes:
        return b"".join(orjson.dumps(o) + b"\n" for o in self.final_objects(usage))

    def ping(self) -> bytes:
        # An empty piece: every Ollama client parses it as an ordinary, empty, part of the answer.
        return orjson.dumps(self._piece()) + b"\n"

    def error(self, message: str, code: str) -> bytes:
        return orjson.dumps({"error": message}) + b"\n"

    @property
    def stop(self) -> ir.StopReason:
        return self._stop
