"""The upstream side, by kind: the request body and path for an upstream, and the decoding of its answer."""

from __future__ import annotations

from dataclasses import replace

from gatehouse.gateway import ir
from gatehouse.gateway.translate import anthropic, ollama, openai
from gatehouse.gateway.translate.common import JSON
from gatehouse.upstreams.config import UpstreamKind


def request_for(
    kind: UpstreamKind, request: ir.Request, model: str, max_tokens: int | None, dropped: list[str]
) -> tuple[str, JSON]:
    """(path, body) of `request` for an upstream of `kind` serving it as `model`; `max_tokens`: the completion
    limit to ask for (the request's own, lowered to what the quota reserved and the model can produce; required
    for Anthropic)."""
    if kind is UpstreamKind.ANTHROPIC:
        if max_tokens is None:
            raise ValueError("an Anthropic upstream needs max_tokens")
        return anthropic.encode_request(request, model, max_tokens, dropped)
    limited = request
    if max_tokens is not None and (request.max_output is None or request.max_output > max_tokens):
        limited = _with_limit(request, max_tokens)
    if kind is UpstreamKind.OLLAMA:
        return ollama.encode_request(limited, model, dropped)
    return openai.encode_request(limited, model, dropped)


def _with_limit(request: ir.Request, limit: int) -> ir.Request:
    return replace(request, max_output=limit)


def result_of(kind: UpstreamKind, data: JSON, *, call_prefix: str) -> ir.Result:
    """A whole answer of an upstream of `kind`."""
    if kind is UpstreamKind.ANTHROPIC:
        return anthropic.decode_result(data)
    if kind is UpstreamKind.OLLAMA:
        return ollama.decode_result(data, call_prefix=call_prefix)
    return openai.decode_result(data)


def decoder_for(kind: UpstreamKind, *, call_prefix: str) -> ir.Decoder:
    """The stream decoder of an upstream of `kind`."""
    if kind is UpstreamKind.ANTHROPIC:
        return anthropic.SseDecoder()
    if kind is UpstreamKind.OLLAMA:
        return ollama.NdjsonDecoder(call_prefix=call_prefix)
    return openai.ChatDecoder()
