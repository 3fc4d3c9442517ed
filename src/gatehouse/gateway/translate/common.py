"""What every translator shares: the JSON alias, the errors, tool-call argument conversion, timestamps."""

from __future__ import annotations

import time
from typing import Any

import orjson

JSON = dict[str, Any]

__all__ = [
    "JSON",
    "TranslationError",
    "UpstreamStreamError",
    "args_to_object",
    "args_to_string",
    "error_message",
    "image_mime",
    "image_url",
    "parse_data_url",
    "rfc3339_now",
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


_dumps = orjson.dumps
_loads = orjson.loads


def args_to_object(raw: Any, where: str, exc: type[Exception]) -> JSON:
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


def args_to_string(raw: Any) -> str:
    """Ollama tool-call arguments (an object) -> the JSON string OpenAI wants."""
    if isinstance(raw, str):
        return raw
    if raw is None:
        return "{}"
    return _dumps(raw).decode()


def error_message(err: Any) -> str:
    """The human message of an upstream error value (a string, or an object with a message)."""
    if isinstance(err, dict):
        inner = err.get("error")
        if isinstance(inner, dict):  # Anthropic: {"type": "error", "error": {"type", "message"}}
            err = inner
        return str(err.get("message") or err)
    return str(err)


def image_mime(b64: str) -> str:
    """Guess an image MIME type from the first base64 characters (the file's magic bytes)."""
    if b64.startswith("/9j/"):
        return "image/jpeg"
    if b64.startswith("R0lGOD"):
        return "image/gif"
    if b64.startswith("UklGR"):
        return "image/webp"
    return "image/png"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 payload) of a base64 data: URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise TranslationError("an image data: URL must be base64-encoded (data:<mime>;base64,...)")
    return header[5:].removesuffix(";base64") or image_mime(payload), payload


def image_url(image: Any) -> str:
    """An ir.Image as a URL: its own, or a data: URL of its inline bytes."""
    if image.url is not None:
        return str(image.url)
    return f"data:{image.media_type};base64,{image.data}"
