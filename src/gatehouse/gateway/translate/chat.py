"""Chat requests and whole (non-streamed) chat responses, OpenAI <-> Ollama in both directions."""

from __future__ import annotations

from typing import Any

from gatehouse.gateway.translate.common import (
    JSON,
    TranslationError,
    UpstreamStreamError,
    args_to_object,
    args_to_string,
    rfc3339_now,
)
from gatehouse.gateway.translate.usage import usage_from_openai

__all__ = [
    "ollama_chat_request_to_openai",
    "ollama_chat_response_to_openai",
    "openai_chat_request_to_ollama",
    "openai_chat_response_to_ollama",
]

# Sampling options that have the same name in OpenAI's top level and Ollama's "options".
_SHARED_OPTIONS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


def _ollama_tool_calls_to_openai(calls: list[Any], ids: list[str]) -> list[JSON]:
    """Ollama tool calls -> OpenAI tool calls using the given ids."""
    out: list[JSON] = []
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        out.append(
            {
                "id": ids[i],
                "type": "function",
                "function": {"name": fn.get("name", ""), "arguments": args_to_string(fn.get("arguments"))},
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
                    "arguments": args_to_object(fn.get("arguments"), where, exc),
                }
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# chat requests
# --------------------------------------------------------------------------------------------------


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
