"""OpenAI's chat completions and legacy completions, as client surfaces."""

from __future__ import annotations

from gatehouse.gateway import ir
from gatehouse.gateway.call import Call, UsageCounts
from gatehouse.gateway.streaming import OpenAIPassthrough, Relay
from gatehouse.gateway.surfaces.base import Surface, bound_of, estimate_prompt_tokens, message_bound
from gatehouse.gateway.translate import completions, openai
from gatehouse.gateway.translate.common import JSON
from gatehouse.gateway.translate.usage import usage_from_openai
from gatehouse.upstreams.config import UpstreamKind


class _OpenAISurface(Surface):
    """What chat and legacy completions share: an SSE passthrough whose usage chunk is always asked for, and
    dropped again unless the client asked for it."""

    native = UpstreamKind.OPENAI
    limit_field = "max_tokens"

    def native_body(self, model: str, limit: int | None) -> JSON:
        body = self._limited({**self.body, "model": model}, self.limit_field, limit)
        if self.call.stream:
            body["stream_options"] = {**(self.body.get("stream_options") or {}), "include_usage": True}
        return body

    def _wants_usage(self) -> bool:
        return bool((self.body.get("stream_options") or {}).get("include_usage"))

    def native_relay(self) -> Relay:
        return OpenAIPassthrough(self.call, self.encoder(), self._wants_usage())

    def native_usage(self, data: JSON) -> UsageCounts | None:
        return usage_from_openai(data)


class ChatSurface(_OpenAISurface):
    """POST /v1/chat/completions."""

    name = "chat"
    native_path = openai.CHAT_PATH

    def __init__(self, call: Call, body: JSON) -> None:
        super().__init__(call, body)
        if "max_completion_tokens" in body:
            self.limit_field = "max_completion_tokens"

    def prompt_bound(self, image_allowance: int) -> int:
        body = self.body
        return message_bound(body["messages"], extra=body.get("tools"), image_allowance=image_allowance)

    def prompt_estimate(self, bound: int) -> int:
        return estimate_prompt_tokens(self.body["messages"])

    def requested(self) -> int | None:
        value = self.body.get("max_completion_tokens", self.body.get("max_tokens"))
        return value if isinstance(value, int) and value > 0 else None

    def _decode(self) -> ir.Request:
        return openai.decode_request(self.body)

    def render(self, result: ir.Result) -> JSON:
        call = self.call
        return openai.encode_result(
            result, model=call.model, response_id=f"chatcmpl-{call.request_id}", created=self.created
        )

    def encoder(self) -> openai.ChatEncoder:
        call = self.call
        return openai.ChatEncoder(
            model=call.model,
            response_id=f"chatcmpl-{call.request_id}",
            created=self.created,
            include_usage=self._wants_usage(),
        )


class CompletionsSurface(_OpenAISurface):
    """POST /v1/completions (OpenAI's legacy completions): a raw prompt continued."""

    name = "completions"
    native_path = openai.COMPLETIONS_PATH

    def prompt_bound(self, image_allowance: int) -> int:
        return bound_of([self.body.get("prompt"), self.body.get("suffix")], image_allowance)

    def requested(self) -> int | None:
        value = self.body.get("max_tokens", completions.DEFAULT_MAX_TOKENS)
        return value if isinstance(value, int) and value > 0 else None

    def _decode(self) -> ir.Request:
        return completions.decode_request(self.body)

    def _echo(self) -> str | None:
        return completions.prompt_text(self.body) if self.body.get("echo") else None

    def render(self, result: ir.Result) -> JSON:
        call = self.call
        return completions.encode_result(
            result, model=call.model, response_id=f"cmpl-{call.request_id}", created=self.created, echo=self._echo()
        )

    def encoder(self) -> completions.StreamEncoder:
        call = self.call
        return completions.StreamEncoder(
            model=call.model,
            response_id=f"cmpl-{call.request_id}",
            created=self.created,
            include_usage=self._wants_usage(),
            echo=self._echo(),
        )
