"""OpenAI's legacy completions (client side) <-> the internal representation: a raw prompt to continue.

Shapes: OpenAI's API reference, as the official `openai` package's types carry it (openai.types.completion,
completion_choice, completion_create_params).
"""

from __future__ import annotations

from typing import Any

import orjson

from gatehouse.gateway import ir
from gatehouse.gateway.translate.common import JSON, TranslationError
from gatehouse.gateway.translate.openai import FINISH_REASONS, SAMPLING, stop_list, usage_object

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


def prompt_text(body: JSON) -> str:
    """The one prompt of the request, as text."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise TranslationError(
                "`prompt`: send one prompt per request (a list of several, or token arrays, is not supported for "
                "this model)"
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise TranslationError("`prompt` must be a string")
    return prompt


def decode_request(body: JSON) -> ir.Request:
    for name in ("n", "best_of"):
        value = body.get(name)
        if value is not None and value != 1:
            raise TranslationError(f"`{name}` > 1 (several completions) is not supported for this model")
    request = ir.Request(model=str(body.get("model")), messages=[], stream=bool(body.get("stream")))
    request.prompt = prompt_text(body)
    if isinstance(body.get("suffix"), str):
        request.suffix = body["suffix"]
    limit = body.get("max_tokens")
    request.max_output = limit if isinstance(limit, int) else DEFAULT_MAX_TOKENS
    request.stop = stop_list(body.get("stop"))
    request.sampling = {k: body[k] for k in SAMPLING if body.get(k) is not None}
    for name in ("user", "logprobs", "logit_bias"):
        if body.get(name) is not None:
            request.hints[name] = body[name]
    return request


def _choice(text: str, finish: str | None) -> JSON:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def encode_result(result: ir.Result, *, model: str, response_id: str, created: int, echo: str | None) -> JSON:
    text = ir.text_of(result.parts)
    return {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [_choice((echo or "") + text, FINISH_REASONS[result.stop])],
        "usage": usage_object(result.usage or ir.Usage()),
    }


class StreamEncoder:
    """Events -> text_completion SSE chunks."""

    media_type = "text/event-stream"
    __slots__ = ("_created", "_echo", "_id", "_include_usage", "_model", "_stop")

    def __init__(self, *, model: str, response_id: str, created: int, include_usage: bool, echo: str | None) -> None:
        self._id = response_id
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._echo = echo
        self._stop: ir.StopReason = "end"

    def _chunk(self, text: str, finish: str | None = None, usage: Any = None) -> bytes:
        chunk: JSON = {
            "id": self._id,
            "object": "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": [_choice(text, finish)] if usage is None else [],
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def encode(self, events: list[ir.Event]) -> bytes:
        out: list[bytes] = []
        if self._echo:
            out.append(self._chunk(self._echo))
            self._echo = None
        for event in events:
            if isinstance(event, ir.TextDelta):
                out.append(self._chunk(event.text))
            elif isinstance(event, ir.Finish):
                self._stop = event.stop
        return b"".join(out)

    def finish(self, usage: ir.Usage | None) -> bytes:
        out = self.encode([]) + self._chunk("", FINISH_REASONS[self._stop])
        if self._include_usage and usage is not None:
            out += self._chunk("", usage=usage_object(usage))
        return out + b"data: [DONE]\n\n"

    def ping(self) -> bytes:
        return b": ping\n\n"

    def error(self, message: str, code: str) -> bytes:
        return (
            b"data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error", "code": code}}) + b"\n\n"
        )
