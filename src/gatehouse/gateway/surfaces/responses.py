"""OpenAI's Responses API, as a client surface. Every upstream gets it translated (chat completions for an
OpenAI-compatible server); the conversation a `previous_response_id` names is read from Gatehouse's own store,
and an answer created with `store` is written there before the client gets it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gatehouse.gateway import ir
from gatehouse.gateway.call import Call, UsageCounts
from gatehouse.gateway.streaming import Relay, ResponsesPassthrough
from gatehouse.gateway.surfaces.base import Surface, bound_of
from gatehouse.gateway.translate import responses
from gatehouse.gateway.translate.common import JSON
from gatehouse.upstreams.config import UpstreamKind
from gatehouse.upstreams.upstream import Route

Store = Callable[[JSON, list[JSON]], Awaitable[None]]  # (the Response object, its input items)


RESPONSES_PATH = "/v1/responses"


class ResponsesSurface(Surface):
    """POST /v1/responses."""

    name = "responses"
    native = UpstreamKind.OPENAI
    native_path = RESPONSES_PATH

    def __init__(self, call: Call, body: JSON, *, history: list[JSON], items: list[JSON], store: Store | None) -> None:
        super().__init__(call, body)
        self.history = history
        self.items = items
        self.store = store
        self.render_ = responses.Render(body, call.model, previous_response_id=body.get("previous_response_id") or None)

    @property
    def response_id(self) -> str:
        return self.render_.response_id

    def prompt_bound(self, image_allowance: int) -> int:
        body = self.body
        return bound_of([body.get("instructions"), self.history, self.items, body.get("tools")], image_allowance)

    def requested(self) -> int | None:
        value = self.body.get("max_output_tokens")
        return value if isinstance(value, int) and value > 0 else None

    def is_native(self, route: Route) -> bool:
        """Only an OpenAI-compatible upstream marked `responses: true` serves the Responses API itself."""
        return route.provider.kind is UpstreamKind.OPENAI and route.provider.config.responses

    def native_body(self, model: str, limit: int | None) -> JSON:
        """The client's request, continuing the conversation Gatehouse stored (the upstream stores nothing:
        Gatehouse keeps every stored response, whatever served it)."""
        body = {k: v for k, v in self.body.items() if k != "previous_response_id"}
        body["model"] = model
        own = self.body.get("input")
        own_items = [{"role": "user", "content": own}] if isinstance(own, str) else list(own or ())
        body["input"] = [*self.history, *own_items]  # the client's items as it sent them (ids of ours left out)
        body["store"] = False
        return self._limited(body, "max_output_tokens", limit)

    def native_relay(self) -> Relay:
        return ResponsesPassthrough(self.call, self.encoder(), self.answered_native)

    def native_usage(self, data: JSON) -> UsageCounts | None:
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return None
        details = usage.get("input_tokens_details")
        cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        return usage.get("input_tokens") or 0, usage.get("output_tokens") or 0, cached

    def native_answer(self, raw: bytes, data: JSON, upstream_model: str) -> bytes:
        return orjson.dumps(self._as_ours(data))

    def _as_ours(self, data: JSON) -> JSON:
        """The upstream's Response as the client's: its model alias, its own store and previous_response_id."""
        return {
            **data,
            "model": self.call.model,
            "store": self.body.get("store", True) is not False,
            "previous_response_id": self.body.get("previous_response_id") or None,
        }

    async def answered_native(self, data: JSON) -> None:
        await self.answered(self._as_ours(data))

    def _decode(self) -> ir.Request:
        request = responses.decode_request(self.body, self.history, self.items)
        request.stream = self.call.stream
        return request

    def render(self, result: ir.Result) -> JSON:
        return self.render_.whole(result)

    def encoder(self) -> responses.StreamEncoder:
        return responses.StreamEncoder(self.render_)

    async def answered(self, answer: JSON) -> None:
        if self.store is not None and answer.get("status") in ("completed", "incomplete"):
            await self.store(answer, self.items)

    def stream_completed(self, encoder: Any) -> JSON | None:
        return encoder.final if isinstance(encoder, responses.StreamEncoder) else None
