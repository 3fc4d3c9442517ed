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
