"""Pure translation between the OpenAI and Ollama chat/embedding protocols (requests, responses, streams).

Everything here works on plain JSON objects (dicts) and does no I/O. The stream translators run once
per upstream chunk, so they avoid pydantic and keep allocations to the chunks they must emit.
"""

from __future__ import annotations

import base64
import sys
import time
from array import array
from typing import Any

import orjson

JSON = dict[str, Any]

__all__ = [
    "JSON",
    "OllamaToOpenAIStream",
    "OpenAIToOllamaStream",
    "TranslationError",
    "UpstreamStreamError",
    "ollama_chat_request_to_openai",
    "ollama_chat_response_to_openai",
    "ollama_embed_request_to_openai",
    "ollama_embed_response_to_openai",
    "openai_chat_request_to_ollama",
    "openai_chat_response_to_ollama",
    "openai_embed_request_to_ollama",
    "openai_embed_response_to_ollama",
    "rfc3339_now",
    "usage_from_ollama",
    "usage_from_openai",
]


class TranslationError(ValueError):
    """The request cannot be expressed in the upstream's protocol; message says why (400 to the client)."""


class UpstreamStreamError(Exception):
    """The upstream reported an error inside a stream."""


# (whole second, its formatted "YYYY-MM-DDTHH:MM:SS") — formatting once per second keeps this cheap per chunk
_last_second: tuple[int, str] = (-1, "")


def rfc3339_now() -> str:
    """Current UTC time as RFC 3339 with microseconds and a Z suffix."""
    global _last_second
    now = time.time()
    second = int(now)
    cached = _last_second
    if cached[0] != second:
        cached = _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

# Sampling options that have the same name in OpenAI's top level and Ollama's "options".
_SHARED_OPTIONS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")

_dumps = orjson.dumps
_loads = orjson.loads


def _args_to_object(raw: Any, where: str, exc: type[Exception]) -> JSON:
    """OpenAI tool-call arguments (a JSON string) -> the object Ollama wants."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise exc(f"{where}: tool call arguments must be a JSON string")
    try:
        value = _loads(raw)
    except orjson.JSONDecodeError:
        raise exc(f"{where}: tool call arguments are not valid JSON: {raw[:200]!r}") from None
    if not isinstance(value, dict):
        raise exc(f"{where}: tool call arguments must be a JSON object, got {type(value).__name__}")
    return value


def _args_to_string(raw: Any) -> str:
    """Ollama tool-call arguments (an object) -> the JSON string OpenAI wants."""
    if isinstance(raw, str):
        return raw
    if raw is None:
        return "{}"
    return _dumps(raw).decode()


def _image_mime(b64: str) -> str:
    """Guess an image MIME type from the first base64 characters (the file's magic bytes)."""
    if b64.startswith("/9j/"):
        return "image/jpeg"
    if b64.startswith("R0lGOD"):
        return "image/gif"
    if b64.startswith("UklGR"):
        return "image/webp"
    return "image/png"


def _data_url_payload(url: str, where: str) -> str:
    """Base64 payload of a data: URL; anything else (http, file, ...) cannot be passed to Ollama."""
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url else "relative"
        raise TranslationError(
            f"{where}: image URLs ({scheme}) are not supported for this model; "
            "send the image inline as a base64 data: URL"
        )
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise TranslationError(f"{where}: image data: URL must be base64-encoded (data:<mime>;base64,...)")
    return payload


def _ollama_tool_calls_to_openai(calls: list[Any], ids: list[str]) -> list[JSON]:
    """Ollama tool calls -> OpenAI tool calls using the given ids."""
    out: list[JSON] = []
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        out.append(
            {
                "id": ids[i],
                "type": "function",
                "function": {"name": fn.get("name", ""), "arguments": _args_to_string(fn.get("arguments"))},
            }
        )
    return out


def _openai_tool_calls_to_ollama(calls: list[Any], where: str, exc: type[Exception]) -> list[JSON]:
    """OpenAI tool calls -> Ollama tool calls (arguments parsed to objects)."""
    out: list[JSON] = []
    for call in calls:
        fn = call.get("function") or {}
        out.append(
            {
                "function": {
                    "name": fn.get("name", ""),
                    "arguments": _args_to_object(fn.get("arguments"), where, exc),
                }
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# chat requests
# --------------------------------------------------------------------------------------------------


def _openai_content_to_ollama(content: Any, where: str) -> tuple[str, list[str] | None]:
    """OpenAI message content -> (Ollama text, base64 images or None)."""
    if content is None:
        return "", None
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise TranslationError(f"{where}: content must be a string or a list of content parts")
    texts: list[str] = []
    images: list[str] | None = None
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise TranslationError(f"{where}: each content part must be an object")
        kind = part.get("type")
        if kind == "text":
            texts.append(part.get("text") or "")
        elif kind == "refusal":
            texts.append(part.get("refusal") or "")
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise TranslationError(f"{where}: image_url part has no url")
            if images is None:
                images = []
            images.append(_data_url_payload(url, where))
        else:
            raise TranslationError(f"{where}: content parts of type {kind!r} are not supported for this model")
    return "\n".join(texts), images


def openai_chat_request_to_ollama(body: JSON, *, model: str) -> JSON:
    """OpenAI chat request -> Ollama /api/chat request body (upstream model name `model`)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("n > 1 (several choices) is not supported for this model")

    messages: list[JSON] = []
    tool_names: dict[str, str] = {}  # tool_call_id -> function name, to label tool results
    for i, msg in enumerate(body.get("messages") or ()):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise TranslationError(f"{where}: each message must be an object")
        role = msg.get("role")
        if role == "developer":
            role = "system"
        elif role == "function":  # legacy function result
            role = "tool"
        text, images = _openai_content_to_ollama(msg.get("content"), where)
        out: JSON = {"role": role, "content": text}
        if images:
            out["images"] = images
        calls = msg.get("tool_calls")
        if calls:
            for call in calls:
                call_id = call.get("id")
                if call_id:
                    tool_names[call_id] = (call.get("function") or {}).get("name", "")
            out["tool_calls"] = _openai_tool_calls_to_ollama(calls, where, TranslationError)
        if role == "tool":
            name = msg.get("name") or tool_names.get(msg.get("tool_call_id") or "")
            if name:
                out["tool_name"] = name
        messages.append(out)

    req: JSON = {"model": model, "messages": messages, "stream": bool(body.get("stream", False))}

    options: JSON = {}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for key in _SHARED_OPTIONS:
        value = body.get(key)
        if value is not None:
            options[key] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = stop
    elif stop is not None:
        raise TranslationError("stop must be a string or a list of strings")
    if options:
        req["options"] = options

    fmt = body.get("response_format")
    if fmt:
        if not isinstance(fmt, dict):
            raise TranslationError("response_format must be an object")
        kind = fmt.get("type")
        if kind == "json_object":
            req["format"] = "json"
        elif kind == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            req["format"] = schema if isinstance(schema, dict) else "json"
        elif kind != "text":
            raise TranslationError(f"response_format type {kind!r} is not supported for this model")

    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        req["tools"] = tools
    return req


def ollama_chat_request_to_openai(body: JSON, *, model: str, stream: bool) -> JSON:
    """Ollama /api/chat request -> OpenAI chat request body; asks for usage when streaming."""
    messages: list[JSON] = []
    counter = 0
    pending: list[tuple[str, str]] = []  # (id, name) of tool calls not yet answered
    for msg in body.get("messages") or ():
        if not isinstance(msg, dict):
            raise TranslationError("each message must be an object")
        role = msg.get("role")
        content = msg.get("content") or ""
        out: JSON = {"role": role}
        images = msg.get("images")
        if images:
            parts: list[JSON] = [{"type": "text", "text": content}] if content else []
            for img in images:
                if not isinstance(img, str):
                    raise TranslationError("images must be base64 strings")
                url = img if img.startswith("data:") else f"data:{_image_mime(img)};base64,{img}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
            out["content"] = parts
        else:
            out["content"] = content
        calls = msg.get("tool_calls")
        if calls:
            ids: list[str] = []
            for call in calls:
                call_id = call.get("id")
                if not call_id:
                    call_id = f"call_{counter}"
                    counter += 1
                ids.append(call_id)
            out["tool_calls"] = _ollama_tool_calls_to_openai(calls, ids)
            pending = [(ids[j], (c.get("function") or {}).get("name", "")) for j, c in enumerate(calls)]
            if not content and not images:
                out["content"] = None
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if call_id:
                pending = [p for p in pending if p[0] != call_id]
            else:
                name = msg.get("tool_name") or msg.get("name")
                match = next((p for p in pending if p[1] == name), None) if name else None
                if match is None and pending:
                    match = pending[0]
                if match is not None:
                    pending.remove(match)
                    call_id = match[0]
                else:
                    call_id = f"call_{counter}"
                    counter += 1
            out["tool_call_id"] = call_id
        messages.append(out)

    req: JSON = {"model": model, "messages": messages}
    options = body.get("options") or {}
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict >= 0:
        req["max_tokens"] = num_predict
    for key in _SHARED_OPTIONS:
        value = options.get(key)
        if value is not None:
            req[key] = value
    stop = options.get("stop")
    if stop:
        req["stop"] = stop

    fmt = body.get("format")
    if fmt == "json":
        req["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        req["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    elif fmt:
        raise TranslationError(f'format {fmt!r} is not supported; use "json" or a JSON schema object')

    tools = body.get("tools")
    if tools:
        req["tools"] = tools
    if stream:
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}
    else:
        req["stream"] = False
    return req


# --------------------------------------------------------------------------------------------------
# non-streamed chat responses
# --------------------------------------------------------------------------------------------------


def ollama_chat_response_to_openai(resp: JSON, *, model: str, request_id: str, created: int) -> JSON:
    """Ollama non-streamed chat response -> OpenAI chat.completion object (with usage)."""
    msg = resp.get("message") or {}
    content: str | None = msg.get("content") or ""
    message: JSON = {"role": "assistant", "content": content}
    calls = msg.get("tool_calls")
    if calls:
        ids = [c.get("id") or f"call_{request_id}_{i}" for i, c in enumerate(calls)]
        message["tool_calls"] = _ollama_tool_calls_to_openai(calls, ids)
        if not content:
            message["content"] = None
        finish = "tool_calls"
    else:
        finish = "length" if resp.get("done_reason") == "length" else "stop"
    prompt = resp.get("prompt_eval_count") or 0
    completion = resp.get("eval_count") or 0
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def openai_chat_response_to_ollama(resp: JSON, *, model: str) -> JSON:
    """OpenAI chat.completion -> Ollama non-streamed /api/chat response (done: true, counts from usage)."""
    choices = resp.get("choices") or ()
    choice = choices[0] if choices else {}
    msg = choice.get("message") or {}
    message: JSON = {"role": "assistant", "content": msg.get("content") or msg.get("refusal") or ""}
    calls = msg.get("tool_calls")
    if calls:
        message["tool_calls"] = _openai_tool_calls_to_ollama(calls, "upstream response", UpstreamStreamError)
    out: JSON = {
        "model": model,
        "created_at": rfc3339_now(),
        "message": message,
        "done": True,
        "done_reason": "length" if choice.get("finish_reason") == "length" else "stop",
        "total_duration": 0,
        "load_duration": 0,
    }
    usage = usage_from_openai(resp)
    if usage is not None:
        out["prompt_eval_count"] = usage[0]
    out["prompt_eval_duration"] = 0
    if usage is not None:
        out["eval_count"] = usage[1]
    out["eval_duration"] = 0
    return out


# --------------------------------------------------------------------------------------------------
# streaming
# --------------------------------------------------------------------------------------------------


def _error_message(err: Any) -> str:
    """The human message of an upstream error value (string or {"message": ...} object)."""
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class OllamaToOpenAIStream:
    """Turns Ollama /api/chat stream objects into OpenAI chat.completion.chunk objects."""

    __slots__ = (
        "_call_prefix",
        "_created",
        "_done",
        "_id",
        "_include_usage",
        "_model",
        "_started",
        "_tool_index",
        "_usage",
    )

    def __init__(self, *, model: str, request_id: str, created: int, include_usage: bool) -> None:
        self._id = f"chatcmpl-{request_id}"
        self._call_prefix = f"call_{request_id}_"
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._started = False
        self._done = False
        self._tool_index = 0
        self._usage: tuple[int, int] | None = None

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
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

    def feed(self, event: JSON) -> list[JSON]:
        """Translate one Ollama stream object into zero or more OpenAI chunks."""
        if "error" in event and event["error"] is not None:
            raise UpstreamStreamError(_error_message(event["error"]))
        if self._done:
            return []
        out: list[JSON] = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        msg = event.get("message")
        if msg:
            calls = msg.get("tool_calls")
            content = msg.get("content")
            if calls:
                deltas: list[JSON] = []
                for call in calls:
                    fn = call.get("function") or {}
                    deltas.append(
                        {
                            "index": self._tool_index,
                            "id": call.get("id") or f"{self._call_prefix}{self._tool_index}",
                            "type": "function",
                            "function": {
                                "name": fn.get("name", ""),
                                "arguments": _args_to_string(fn.get("arguments")),
                            },
                        }
                    )
                    self._tool_index += 1
                delta: JSON = {"content": content} if content else {}
                delta["tool_calls"] = deltas
                out.append(self._chunk(delta))
            elif content:
                out.append(self._chunk({"content": content}))
        if event.get("done"):
            self._done = True
            if self._tool_index:
                finish = "tool_calls"
            elif event.get("done_reason") == "length":
                finish = "length"
            else:
                finish = "stop"
            out.append(self._chunk({}, finish))
            self._usage = usage_from_ollama(event)
            if self._include_usage and self._usage is not None:
                prompt, completion = self._usage
                out.append(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                        },
                    }
                )
        return out

    @property
    def done(self) -> bool:
        """Whether the upstream's final (done: true) object has been seen."""
        return self._done

    @property
    def usage(self) -> tuple[int, int] | None:
        """(prompt_tokens, completion_tokens) once the final object reported them, else None."""
        return self._usage


class OpenAIToOllamaStream:
    """Turns OpenAI chat.completion.chunk objects into Ollama /api/chat stream objects."""

    __slots__ = ("_finish_reason", "_model", "_tools", "_usage")

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._finish_reason: str | None = None
        self._usage: tuple[int, int] | None = None
        # index -> [id, name, argument fragments]
        self._tools: dict[int, list[Any]] = {}

    def _flush_tools(self) -> list[JSON]:
        if not self._tools:
            return []
        calls = [
            {
                "function": {
                    "name": name,
                    "arguments": _args_to_object("".join(parts), "upstream stream", UpstreamStreamError),
                }
            }
            for _, name, parts in (self._tools[i] for i in sorted(self._tools))
        ]
        self._tools = {}
        return [
            {
                "model": self._model,
                "created_at": rfc3339_now(),
                "message": {"role": "assistant", "content": "", "tool_calls": calls},
                "done": False,
            }
        ]

    def feed(self, chunk: JSON) -> list[JSON]:
        """Translate one OpenAI chunk into zero or more Ollama stream objects (never done: true)."""
        if "error" in chunk and chunk["error"] is not None:
            raise UpstreamStreamError(_error_message(chunk["error"]))
        usage = chunk.get("usage")
        if usage:
            self._usage = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        choices = chunk.get("choices")
        if not choices:
            return []
        choice = choices[0]
        out: list[JSON] = []
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
            if content:
                out.append(
                    {
                        "model": self._model,
                        "created_at": rfc3339_now(),
                        "message": {"role": "assistant", "content": content},
                        "done": False,
                    }
                )
            calls = delta.get("tool_calls")
            if calls:
                tools = self._tools
                for call in calls:
                    index = call.get("index", 0)
                    slot = tools.get(index)
                    if slot is None:
                        slot = tools[index] = [call.get("id"), "", []]
                    fn = call.get("function")
                    if fn:
                        name = fn.get("name")
                        if name:
                            slot[1] = name
                        args = fn.get("arguments")
                        if args:
                            slot[2].append(args)
        finish = choice.get("finish_reason")
        if finish:
            self._finish_reason = finish
            if self._tools:
                out.extend(self._flush_tools())
        return out

    def finish(self) -> list[JSON]:
        """Emit any pending tool calls, then the final done: true object."""
        out = self._flush_tools()
        final: JSON = {
            "model": self._model,
            "created_at": rfc3339_now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "length" if self._finish_reason == "length" else "stop",
            "total_duration": 0,
            "load_duration": 0,
        }
        if self._usage is not None:
            final["prompt_eval_count"] = self._usage[0]
        final["prompt_eval_duration"] = 0
        if self._usage is not None:
            final["eval_count"] = self._usage[1]
        final["eval_duration"] = 0
        out.append(final)
        return out

    @property
    def finish_reason(self) -> str | None:
        """The upstream's finish_reason, once seen."""
        return self._finish_reason

    @property
    def usage(self) -> tuple[int, int] | None:
        """(prompt_tokens, completion_tokens) once the upstream reported usage, else None."""
        return self._usage


# --------------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------------


def openai_embed_request_to_ollama(body: JSON, *, model: str) -> JSON:
    """OpenAI /v1/embeddings request -> Ollama /api/embed request (text inputs only)."""
    raw = body.get("input")
    if isinstance(raw, str):
        inp: str | list[str] = raw
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        inp = raw
    elif isinstance(raw, list) and raw and all(isinstance(x, int | list) for x in raw):
        raise TranslationError("token-array inputs are not supported for this model; send text")
    else:
        raise TranslationError("input must be a string or a list of strings")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise TranslationError(f'encoding_format {fmt!r} is not supported; use "float" or "base64"')
    req: JSON = {"model": model, "input": inp}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        req["dimensions"] = dimensions
    return req


def _floats_to_base64(vector: Any) -> str:
    """Little-endian float32 bytes of a vector, base64-encoded (OpenAI's encoding_format=base64)."""
    packed = array("f", vector)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def _base64_to_floats(data: str) -> list[float]:
    """Inverse of _floats_to_base64."""
    packed = array("f", base64.b64decode(data))
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
        packed.byteswap()
    return packed.tolist()


def ollama_embed_response_to_openai(resp: JSON, *, model: str, encoding_format: str = "float") -> JSON:
    """Ollama /api/embed response -> OpenAI embedding list (base64 vectors if the client asked)."""
    vectors = resp.get("embeddings") or ()
    if encoding_format == "base64":
        data = [{"object": "embedding", "index": i, "embedding": _floats_to_base64(v)} for i, v in enumerate(vectors)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    n = resp.get("prompt_eval_count") or 0
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": n, "total_tokens": n}}


def ollama_embed_request_to_openai(body: JSON, *, model: str) -> JSON:
    """Ollama /api/embed request (or legacy {"prompt"}) -> OpenAI /v1/embeddings request."""
    inp = body.get("input")
    if inp is None:
        inp = body.get("prompt")
    if not (isinstance(inp, str) or (isinstance(inp, list) and all(isinstance(x, str) for x in inp))):
        raise TranslationError("input must be a string or a list of strings")
    req: JSON = {"model": model, "input": inp}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        req["dimensions"] = dimensions
    return req


def openai_embed_response_to_ollama(resp: JSON, *, model: str) -> JSON:
    """OpenAI embedding list -> Ollama /api/embed response (vectors in input order)."""
    items = sorted(resp.get("data") or (), key=lambda d: d.get("index", 0))
    embeddings = [_base64_to_floats(e) if isinstance(e, str) else e for e in (d.get("embedding") for d in items)]
    out: JSON = {"model": model, "embeddings": embeddings}
    usage = resp.get("usage")
    if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
        out["prompt_eval_count"] = usage["prompt_tokens"]
    return out


# --------------------------------------------------------------------------------------------------
# usage extraction
# --------------------------------------------------------------------------------------------------


def usage_from_openai(obj: JSON) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from an OpenAI object's "usage", or None when absent/null."""
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    return usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0


def usage_from_ollama(obj: JSON) -> tuple[int, int] | None:
    """(prompt_eval_count, eval_count) from a final Ollama object, or None when not final / not reported."""
    if obj.get("done") is False:
        return None
    prompt = obj.get("prompt_eval_count")
    completion = obj.get("eval_count")
    if prompt is None and completion is None:
        return None
    return prompt or 0, completion or 0
