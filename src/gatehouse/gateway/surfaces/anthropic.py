"""Anthropic's Messages API, as a client surface."""

from __future__ import annotations

from gatehouse.gateway import ir
from gatehouse.gateway.call import UsageCounts
from gatehouse.gateway.streaming import AnthropicPassthrough, Relay
from gatehouse.gateway.surfaces.base import Surface, bound_of
from gatehouse.gateway.translate import anthropic
from gatehouse.gateway.translate.common import JSON
from gatehouse.upstreams.config import UpstreamKind


class MessagesSurface(Surface):
    """POST /v1/messages."""

    name = "messages"
    native = UpstreamKind.ANTHROPIC
    native_path = anthropic.MESSAGES_PATH

    def prompt_bound(self, image_allowance: int) -> int:
        body = self.body
        return bound_of([body.get("system"), body["messages"], body.get("tools")], image_allowance)

    def requested(self) -> int | None:
        value = self.body.get("max_tokens")
        return value if isinstance(value, int) and value > 0 else None

    def native_body(self, model: str, limit: int | None) -> JSON:
        body = {**self.body, "model": model}
        return self._limited(body, "max_tokens", limit)

    def native_relay(self) -> Relay:
        return AnthropicPassthrough(self.call, self.encoder())

    def native_usage(self, data: JSON) -> UsageCounts | None:
        usage = anthropic.decode_usage(data.get("usage"))
        return usage.counts() if usage is not None else None

    def _decode(self) -> ir.Request:
        return anthropic.decode_request(self.body)

    def _message_id(self) -> str:
        return f"msg_{self.call.request_id}"

    def render(self, result: ir.Result) -> JSON:
        return anthropic.encode_result(result, model=self.call.model, message_id=self._message_id())

    def encoder(self) -> anthropic.SseEncoder:
        return anthropic.SseEncoder(model=self.call.model, message_id=self._message_id())
