"""Ollama's /api/chat and /api/generate, as client surfaces."""

from __future__ import annotations

from gatehouse.gateway import ir
from gatehouse.gateway.call import UsageCounts
from gatehouse.gateway.streaming import OllamaPassthrough, Relay
from gatehouse.gateway.surfaces.base import Surface, bound_of, estimate_prompt_tokens, message_bound
from gatehouse.gateway.translate import ollama
from gatehouse.gateway.translate.common import JSON
from gatehouse.gateway.translate.usage import usage_from_ollama
from gatehouse.upstreams.config import UpstreamKind


class _OllamaSurface(Surface):
    native = UpstreamKind.OLLAMA

    def requested(self) -> int | None:
        options = self.body.get("options")
        value = options.get("num_predict") if isinstance(options, dict) else None
        return value if isinstance(value, int) and value > 0 else None  # -1 (no limit), -2 (fill the context)

    def native_body(self, model: str, limit: int | None) -> JSON:
        body = {**self.body, "model": model, "stream": self.call.stream}
        options = self._limited(dict(self.body.get("options") or {}), "num_predict", limit)
        if options:
            body["options"] = options
        return body

    def native_relay(self) -> Relay:
        return OllamaPassthrough(self.call, self.encoder())

    def native_usage(self, data: JSON) -> UsageCounts | None:
        return usage_from_ollama(data)


class OllamaChatSurface(_OllamaSurface):
    """POST /api/chat."""

    name = "ollama_chat"
    native_path = ollama.CHAT_PATH

    def prompt_bound(self, image_allowance: int) -> int:
        body = self.body
        return message_bound(body["messages"], extra=body.get("tools"), image_allowance=image_allowance)

    def prompt_estimate(self, bound: int) -> int:
        return estimate_prompt_tokens(self.body["messages"])

    def _decode(self) -> ir.Request:
        request = ollama.decode_chat(self.body)
        request.stream = self.call.stream
        return request

    def render(self, result: ir.Result) -> JSON:
        return ollama.encode_chat_result(result, model=self.call.model)

    def encoder(self) -> ollama.NdjsonEncoder:
        return ollama.NdjsonEncoder(model=self.call.model)


class GenerateSurface(_OllamaSurface):
    """POST /api/generate: a prompt (with a system prompt and images), or a raw continuation."""

    name = "generate"
    native_path = ollama.GENERATE_PATH

    def prompt_bound(self, image_allowance: int) -> int:
        body = self.body
        return (
            bound_of([body.get("prompt"), body.get("system"), body.get("suffix")], image_allowance)
            + len(body.get("images") or ()) * image_allowance
        )

    def _decode(self) -> ir.Request:
        request = ollama.decode_generate(self.body)
        request.stream = self.call.stream
        return request

    def render(self, result: ir.Result) -> JSON:
        return ollama.encode_generate_result(result, model=self.call.model)

    def encoder(self) -> ollama.NdjsonEncoder:
        return ollama.NdjsonEncoder(model=self.call.model, generate=True)
