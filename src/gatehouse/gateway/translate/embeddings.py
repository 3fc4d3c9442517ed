"""Embedding requests and responses, OpenAI <-> Ollama in both directions, including base64 vectors."""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

from gatehouse.gateway.translate.common import JSON, TranslationError

__all__ = [
    "in_encoding",
    "ollama_embed_request_to_openai",
    "ollama_embed_response_to_openai",
    "openai_embed_request_to_ollama",
    "openai_embed_response_to_ollama",
]


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


def in_encoding(data: JSON, encoding_format: str) -> JSON | None:
    """An OpenAI embedding list with its vectors in the encoding the client asked for, or None when they already
    are: some OpenAI-compatible servers ignore `encoding_format` and always answer floats, and the OpenAI SDKs
    (the Node one by default) decode base64."""
    items = data.get("data")
    if not isinstance(items, list):
        return None
    want_text = encoding_format == "base64"
    if all(isinstance(item.get("embedding"), str) == want_text for item in items if isinstance(item, dict)):
        return None
    converted = []
    for item in items:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if want_text and isinstance(vector, list):
            item = {**item, "embedding": _floats_to_base64(vector)}
        elif not want_text and isinstance(vector, str):
            item = {**item, "embedding": _base64_to_floats(vector)}
        converted.append(item)
    return {**data, "data": converted}


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
