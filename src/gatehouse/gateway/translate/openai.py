"""OpenAI chat completions (and legacy completions) <-> the internal representation, both sides.

Client side: `decode_request` (a /v1/chat/completions body), `encode_result` and `ChatEncoder` (what the client
gets back). Upstream side: `encode_request` (the body for an OpenAI-compatible server: chat, or legacy
completions for a raw prompt), `decode_result` and `ChatDecoder` / `CompletionDecoder` (what it answers).
Shapes: OpenAI's API reference, as the official `openai` package's types carry it.
"""

from __future__ import annotations

from typing import Any

import orjson

from gatehouse.gateway import ir
from gatehouse.gateway.translate.common import (
    JSON,
    TranslationError,
    UpstreamStreamError,
    error_message,
    image_url,
    parse_data_url,
)

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
# Hints an OpenAI-compatible server takes under the same name.
_HINTS = ("user", "metadata", "prompt_cache_key", "service_tier", "safety_identifier", "store", "verbosity")
_STOPS: dict[str | None, ir.StopReason] = {
    "stop": "end",
    "length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
FINISH_REASONS: dict[str, str] = {
    "end": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
}
_EFFORT_BUDGETS = ((2048, "low"), (8192, "medium"))


def effort_for_budget(budget: int) -> str:
    """A reasoning effort level for a thinking-token budget (Anthropic's knob, for OpenAI's)."""
    return next((effort for most, effort in _EFFORT_BUDGETS if budget <= most), "high")


# --- client side: the request ----------------------------------------------------------------------


def _content_parts(content: Any, where: str) -> list[ir.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}: content must be a string or a list of content parts")
    parts: list[ir.Part] = []
    for part in content:
        if isinstance(part, str):
            parts.append(ir.Text(part))
            continue
        if not isinstance(part, dict):
            raise TranslationError(f"{where}: each content part must be an object")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(ir.Text(part.get("text") or ""))
        elif kind == "refusal":
            parts.append(ir.Text(part.get("refusal") or ""))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise TranslationError(f"{where}: image_url part has no url")
            parts.append(image_from_url(url))
        else:
            raise TranslationError(f"{where}: content parts of type {kind!r} are not supported for this model")
    return parts


def image_from_url(url: str) -> ir.Image:
    """An image given as a URL: inline when it is a base64 data: URL, else by reference."""
    parsed = parse_data_url(url)
    if parsed is not None:
        return ir.Image(data=parsed[1], media_type=parsed[0])
    return ir.Image(url=url)


def _tool_calls(calls: Any, where: str) -> list[ir.Part]:
    out: list[ir.Part] = []
    for i, call in enumerate(calls or ()):
        fn = call.get("function") or {}
        arguments = fn.get("arguments")
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        out.append(ir.ToolCall(call.get("id") or f"call_{i}", fn.get("name") or "", arguments or ""))
    return out


def decode_request(body: JSON) -> ir.Request:
    """A chat completions body (already validated by `validate`) as the internal representation."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("n > 1 (several choices) is not supported for this model")
    messages: list[ir.Message] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, to label tool results
    for i, msg in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        role = msg.get("role")
        parts = _content_parts(msg.get("content"), where)
        if role in ("system", "developer"):
            messages.append(ir.Message("system", parts))
        elif role == "assistant":
            if msg.get("reasoning_content"):
                parts.insert(0, ir.Reasoning(str(msg["reasoning_content"])))
            calls = _tool_calls(msg.get("tool_calls"), where)
            for call in calls:
                names[call.id] = call.name  # type: ignore[union-attr]
            messages.append(ir.Message("assistant", parts + calls))
        elif role in ("tool", "function"):
            call_id = str(msg.get("tool_call_id") or "")
            name = msg.get("name") or names.get(call_id, "")
            result = ir.ToolResult(call_id, [p for p in parts if isinstance(p, ir.Text | ir.Image)], name=name)
            messages.append(ir.Message("tool", [result]))
        else:
            messages.append(ir.Message("user", parts))
    request = ir.Request(model=str(body.get("model")), messages=messages, stream=bool(body.get("stream")))
    _decode_options(body, request)
    return request


def _decode_options(body: JSON, request: ir.Request) -> None:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    request.max_output = limit if isinstance(limit, int) else None
    request.stop = stop_list(body.get("stop"))
    request.sampling = {k: body[k] for k in SAMPLING if body.get(k) is not None}
    tools = body.get("tools")
    if tools:
        request.tools = decode_tools(tools)
    request.tool_choice = _decode_tool_choice(body.get("tool_choice"))
    if isinstance(body.get("parallel_tool_calls"), bool):
        request.parallel_tool_calls = body["parallel_tool_calls"]
    request.response_format = decode_response_format(body.get("response_format"))
    effort = body.get("reasoning_effort")
    if isinstance(effort, str):
        request.reasoning = ir.ReasoningConfig(enabled=effort != "none", effort=effort)
    for name in _HINTS:
        if body.get(name) is not None:
            request.hints[name] = body[name]
    for name in ("logprobs", "top_logprobs", "logit_bias", "prediction"):
        if body.get(name) not in (None, False):
            request.hints[name] = body[name]
    for name in ("web_search_options", "audio"):
        if body.get(name) is not None:
            raise TranslationError(f"`{name}` is not supported for this model (its upstream is not OpenAI's)")


def stop_list(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise TranslationError("stop must be a string or a list of strings")


def decode_tools(tools: list[Any]) -> list[ir.Tool]:
    """Function tools in OpenAI chat's shape ({type: function, function: {name, description, parameters}})."""
    return [_decode_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]


def _decode_tool(tool: Any, where: str) -> ir.Tool:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise TranslationError(f"{where}: tools of type {kind!r} are not supported for this model")
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise TranslationError(f"{where}: a function tool needs function.name")
    return ir.Tool(fn["name"], fn.get("description"), fn.get("parameters"), fn.get("strict"))


def _decode_tool_choice(choice: Any) -> ir.ToolChoice | None:
    if choice in ("auto", "none", "required"):
        return ir.ToolChoice(choice)
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        if isinstance(name, str):
            return ir.ToolChoice("tool", name)
    return None


def decode_response_format(fmt: Any) -> ir.ResponseFormat | None:
    if not fmt:
        return None
    if not isinstance(fmt, dict):
        raise TranslationError("response_format must be an object")
    kind = fmt.get("type")
    if kind == "json_object":
        return ir.ResponseFormat()
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema")
        return ir.ResponseFormat(
            schema if isinstance(schema, dict) else None, str(spec.get("name") or "response"), spec.get("strict")
        )
    if kind != "text":
        raise TranslationError(f"response_format type {kind!r} is not supported for this model")
    return None


# --- upstream side: the request --------------------------------------------------------------------


def _encode_content(parts: list[Any], dropped: list[str]) -> Any:
    if all(type(p) is ir.Text for p in parts):
        return "".join(p.text for p in parts)
    out: list[JSON] = []
    for part in parts:
        if type(part) is ir.Text:
            out.append({"type": "text", "text": part.text})
        elif type(part) is ir.Image:
            out.append({"type": "image_url", "image_url": {"url": image_url(part)}})
    return out


def _encode_messages(request: ir.Request, dropped: list[str]) -> list[JSON]:
    out: list[JSON] = []
    for message in request.messages:
        role = message.role
        parts = message.parts
        if role == "tool":
            for result in parts:
                if isinstance(result, ir.ToolResult):
                    if any(type(c) is ir.Image for c in result.content):
                        _drop(dropped, "images in tool results")
                    entry: JSON = {
                        "role": "tool",
                        "tool_call_id": result.call_id,
                        "content": ir.text_of(result.content),
                    }
                    out.append(entry)
            continue
        if role == "assistant":
            calls = [p for p in parts if type(p) is ir.ToolCall]
            if any(type(p) is ir.Reasoning for p in parts):
                _drop(dropped, "reasoning of earlier turns")
            text = ir.text_of(parts)
            entry = {"role": "assistant", "content": text if text or not calls else None}
            if calls:
                entry["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                    for c in calls
                ]
            out.append(entry)
            continue
        out.append({"role": role, "content": _encode_content(parts, dropped)})
    return out


def _drop(dropped: list[str], name: str) -> None:
    if name not in dropped:
        dropped.append(name)


def encode_request(request: ir.Request, model: str, dropped: list[str]) -> tuple[str, JSON]:
    """(path, body) for an OpenAI-compatible server; what it cannot take is named in `dropped`."""
    if request.prompt is not None:
        body: JSON = {"model": model, "prompt": request.prompt}
        if request.suffix is not None:
            body["suffix"] = request.suffix
        path = COMPLETIONS_PATH
        if request.max_output is not None:
            body["max_tokens"] = request.max_output
    else:
        body = {"model": model, "messages": _encode_messages(request, dropped)}
        path = CHAT_PATH
        if request.max_output is not None:
            body["max_tokens"] = request.max_output
        if request.tools and not (request.tool_choice and request.tool_choice.mode == "none"):
            body["tools"] = [{"type": "function", "function": _function(tool)} for tool in request.tools]
            choice = request.tool_choice
            if choice is not None:
                body["tool_choice"] = (
                    {"type": "function", "function": {"name": choice.name}} if choice.mode == "tool" else choice.mode
                )
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        fmt = request.response_format
        if fmt is not None:
            body["response_format"] = (
                {"type": "json_schema", "json_schema": _schema_spec(fmt)}
                if fmt.schema is not None
                else {"type": "json_object"}
            )
        reasoning = request.reasoning
        if reasoning is not None:
            # Reasoning switched off (Ollama's think: false) is every OpenAI-compatible model's default.
            if reasoning.effort or reasoning.budget:
                body["reasoning_effort"] = reasoning.effort or effort_for_budget(reasoning.budget or 0)
            if reasoning.summary:
                _drop(dropped, "reasoning.summary")
    if request.stop:
        body["stop"] = request.stop
    for key, value in request.sampling.items():
        if key == "top_k":
            _drop(dropped, "top_k")
        else:
            body[key] = value
    for key, value in request.hints.items():
        if key in _HINTS and path == CHAT_PATH:
            body[key] = value
        else:
            _drop(dropped, key)
    body["stream"] = request.stream
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    return path, body


def _function(tool: ir.Tool) -> JSON:
    fn: JSON = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return fn


def _schema_spec(fmt: ir.ResponseFormat) -> JSON:
    spec: JSON = {"name": fmt.name, "schema": fmt.schema}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return spec


# --- upstream side: the answer ---------------------------------------------------------------------


def decode_usage(obj: JSON) -> ir.Usage | None:
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    out_details = usage.get("completion_tokens_details")
    return ir.Usage(
        input=usage.get("prompt_tokens") or 0,
        output=usage.get("completion_tokens") or 0,
        cached=(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        reasoning=(out_details.get("reasoning_tokens") or 0) if isinstance(out_details, dict) else 0,
    )


def _reasoning_text(holder: JSON) -> Any:
    # vLLM, DeepSeek and llama.cpp say reasoning_content; OpenRouter and others say reasoning.
    return holder.get("reasoning_content") or holder.get("reasoning")


def decode_result(data: JSON) -> ir.Result:
    """A chat.completion or a text_completion object as a whole answer."""
    if "error" in data and data["error"] is not None:
        raise UpstreamStreamError(error_message(data["error"]))
    choices = data.get("choices") or ()
    choice = choices[0] if choices else {}
    parts: list[ir.Part] = []
    if data.get("object") == "text_completion" or "text" in choice:
        if choice.get("text"):
            parts.append(ir.Text(choice["text"]))
    else:
        message = choice.get("message") or {}
        reasoning = _reasoning_text(message)
        if isinstance(reasoning, str) and reasoning:
            parts.append(ir.Reasoning(reasoning))
        content = message.get("content") or message.get("refusal")
        if content:
            parts.append(ir.Text(content))
        parts.extend(_tool_calls(message.get("tool_calls"), "upstream answer"))
    stop = _STOPS.get(choice.get("finish_reason"), "end")
    return ir.Result(parts, stop, usage=decode_usage(data), id=data.get("id"))


class ChatDecoder:
    """chat.completion.chunk SSE lines (or text_completion ones) -> events."""

    __slots__ = ("_calls", "usage")

    def __init__(self) -> None:
        self.usage: ir.Usage | None = None
        self._calls: dict[int, int] = {}  # upstream tool index -> count of its fragments

    def feed(self, line: bytes) -> list[ir.Event]:
        if not line.startswith(b"data:"):
            return []
        payload = line[5:].strip()
        if payload == b"[DONE]" or not payload:
            return []
        return self.feed_chunk(orjson.loads(payload))

    def feed_chunk(self, chunk: JSON) -> list[ir.Event]:
        if chunk.get("error") is not None:
            raise UpstreamStreamError(error_message(chunk["error"]))
        usage = decode_usage(chunk)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return []
        choice = choices[0]
        events: list[ir.Event] = []
        delta = choice.get("delta")
        if delta:
            reasoning = _reasoning_text(delta)
            if isinstance(reasoning, str) and reasoning:
                events.append(ir.ReasoningDelta(reasoning))
            content = delta.get("content") or delta.get("refusal")
            if content:
                events.append(ir.TextDelta(content))
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                fn = call.get("function") or {}
                if index not in self._calls:
                    self._calls[index] = 0
                    events.append(ir.ToolCallStart(index, call.get("id") or f"call_{index}", fn.get("name") or ""))
                args = fn.get("arguments")
                if args:
                    events.append(ir.ToolArgsDelta(index, args))
        elif choice.get("text"):  # legacy completions
            events.append(ir.TextDelta(choice["text"]))
        finish = choice.get("finish_reason")
        if finish:
            events.append(ir.Finish(_STOPS.get(finish, "end")))
        return events


# --- client side: the answer -----------------------------------------------------------------------


def usage_object(usage: ir.Usage) -> JSON:
    out: JSON = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
    }
    if usage.cached:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached}
    if usage.reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return out


def encode_result(result: ir.Result, *, model: str, response_id: str, created: int) -> JSON:
    """A whole answer as a chat.completion object."""
    text = ir.text_of(result.parts)
    calls = [p for p in result.parts if type(p) is ir.ToolCall]
    message: JSON = {"role": "assistant", "content": text if text or not calls else None}
    reasoning = "".join(p.text for p in result.parts if type(p) is ir.Reasoning)
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
            for c in calls
        ]
    usage = result.usage or ir.Usage()
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": FINISH_REASONS[result.stop], "logprobs": None}],
        "usage": usage_object(usage),
    }


class ChatEncoder:
    """Events -> chat.completion.chunk SSE lines."""

    media_type = "text/event-stream"
    __slots__ = ("_created", "_id", "_include_usage", "_model", "_started", "_stop", "_tools")

    def __init__(self, *, model: str, response_id: str, created: int, include_usage: bool) -> None:
        self._id = response_id
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._started = False
        self._stop: ir.StopReason | None = None
        self._tools: dict[int, int] = {}  # event index -> OpenAI tool index (dense, from 0)

    def chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        chunk: JSON = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def start(self) -> list[JSON]:
        if self._started:
            return []
        self._started = True
        return [self.chunk({"role": "assistant", "content": ""})]

    def chunks(self, events: list[ir.Event]) -> list[JSON]:
        out = self.start()
        calls: list[JSON] = []  # tool-call deltas of this batch, sent together in one chunk
        for event in events:
            if isinstance(event, ir.ToolCallStart):
                index = self._tools[event.index] = len(self._tools)
                fn = {"name": event.name, "arguments": ""}
                calls.append({"index": index, "id": event.id, "type": "function", "function": fn})
                continue
            if isinstance(event, ir.ToolArgsDelta):
                index = self._tools.get(event.index, 0)
                if calls and calls[-1]["index"] == index:
                    calls[-1]["function"]["arguments"] += event.fragment
                else:
                    calls.append({"index": index, "function": {"arguments": event.fragment}})
                continue
            if calls:
                out.append(self.chunk({"tool_calls": calls}))
                calls = []
            if isinstance(event, ir.TextDelta):
                out.append(self.chunk({"content": event.text}))
            elif isinstance(event, ir.ReasoningDelta):
                if event.text:
                    out.append(self.chunk({"reasoning_content": event.text}))
            else:
                self._stop = event.stop
        if calls:
            out.append(self.chunk({"tool_calls": calls}))
        return out

    def final_chunks(self, usage: ir.Usage | None) -> list[JSON]:
        out = self.start()
        stop = self._stop or "end"
        if self._tools and stop == "end":
            stop = "tool_use"
        out.append(self.chunk({}, FINISH_REASONS[stop]))
        if self._include_usage and usage is not None:
            out.append(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": usage_object(usage),
                }
            )
        return out

    def encode(self, events: list[ir.Event]) -> bytes:
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in self.chunks(events))

    def finish(self, usage: ir.Usage | None) -> bytes:
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in self.final_chunks(usage)) + b"data: [DONE]\n\n"

    def ping(self) -> bytes:
        return b": ping\n\n"

    def error(self, message: str, code: str) -> bytes:
        body = {"error": {"message": message, "type": "upstream_error", "code": code}}
        return b"data: " + orjson.dumps(body) + b"\n\n"
