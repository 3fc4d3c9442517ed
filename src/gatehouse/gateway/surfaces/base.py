"""A client surface: one API a client speaks (OpenAI chat, Responses, legacy completions, Anthropic Messages,
Ollama chat and generate), per request. It says how to size the request for the quota, how to pass it to an
upstream of its own protocol unchanged, how to decode it into the internal representation for any other, and
how to answer (whole, or streamed with its own framing)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import orjson

from gatehouse.gateway import ir
from gatehouse.gateway.call import Call, UsageCounts
from gatehouse.gateway.streaming import Encoder, Relay
from gatehouse.gateway.translate.common import JSON
from gatehouse.limits.quotas import MESSAGE_FRAMING_TOKENS, REQUEST_FRAMING_TOKENS
from gatehouse.limits.quotas import prompt_bound as message_bound
from gatehouse.upstreams.config import UpstreamKind
from gatehouse.upstreams.upstream import Route

__all__ = ["Surface", "bound_of", "json_bound", "message_bound"]


class Surface:
    """The per-request adapter of one client protocol (subclasses: one per surface)."""

    name: ClassVar[str]  # recorded in the request log and as the metrics' surface label
    native: ClassVar[UpstreamKind | None] = None  # the upstream kind that gets the request unchanged
    native_path: ClassVar[str] = ""

    def __init__(self, call: Call, body: JSON) -> None:
        self.call = call
        self.body = body
        self.created = int(time.time())
        self._request: ir.Request | None = None
        self._hints: JSON = {}

    def hint(self, name: str, value: Any) -> None:
        """A hint that came outside the body (a header): mapped where the upstream has it, else dropped and named."""
        self._hints[name] = value

    # --- sizing ---

    def prompt_bound(self, image_allowance: int) -> int:
        """An upper bound of the prompt's tokens (what the quota reserves for it)."""
        raise NotImplementedError

    def requested(self) -> int | None:
        """The completion limit the client asked for, if any."""
        raise NotImplementedError

    def prompt_estimate(self, bound: int) -> int:
        """A realistic prompt count, recorded when the upstream reports none (about 3 bytes a token)."""
        return max(1, bound // 3)

    # --- the upstream of the same protocol ---

    def is_native(self, route: Route) -> bool:
        """Whether this route's upstream speaks this protocol (the request passes through unchanged)."""
        return route.provider.kind is self.native

    def native_body(self, model: str, limit: int | None) -> JSON:
        """The body for an upstream of this protocol: the client's own, naming the upstream's model, its
        completion limit lowered to `limit` where that is lower."""
        raise NotImplementedError

    def native_relay(self) -> Relay:
        raise NotImplementedError

    def _limited(self, body: JSON, field: str, limit: int | None) -> JSON:
        """`body` with its completion limit `field` lowered to `limit` where the client asked for more (or
        nothing)."""
        requested = self.requested()
        if limit is not None and (requested is None or limit < requested):
            body[field] = limit
        return body

    def native_usage(self, data: JSON) -> UsageCounts | None:
        raise NotImplementedError

    def native_answer(self, raw: bytes, data: JSON, upstream_model: str) -> bytes:
        """A whole answer of an upstream of this protocol, as the client gets it: the upstream's bytes, showing
        the model name the client asked for (an alias)."""
        if upstream_model == self.call.model:
            return raw
        return orjson.dumps({**data, "model": self.call.model})

    # --- any other upstream ---

    def decode(self) -> ir.Request:
        """The request in the internal representation (decoded once, when an upstream of another kind needs it)."""
        if self._request is None:
            self._request = self._decode()
            self._request.hints.update(self._hints)
        return self._request

    def _decode(self) -> ir.Request:
        raise NotImplementedError

    def render(self, result: ir.Result) -> JSON:
        """A whole answer in this protocol."""
        raise NotImplementedError

    def encoder(self) -> Encoder:
        """The stream encoder (also the framing of keep-alives and error events for a passthrough stream)."""
        raise NotImplementedError

    async def answered(self, answer: JSON) -> None:
        """Runs once a whole answer is ready, before the client gets it (Responses stores it here)."""

    async def answered_native(self, data: JSON) -> None:
        """`answered`, for an answer of an upstream of this protocol (as the upstream sent it)."""

    def stream_completed(self, encoder: Any) -> JSON | None:
        """The whole answer of a finished translated stream, when this surface keeps it (Responses)."""
        return None


_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})


def json_bound(value: Any, image_allowance: int) -> int:
    """An upper bound of the tokens in any request part (messages, items, blocks, tools): the UTF-8 bytes of its
    strings (a token is at least a byte), framing per object, and an allowance per image instead of its bytes."""
    if isinstance(value, str):
        return image_allowance if value.startswith("data:") else len(value.encode())
    if isinstance(value, dict):
        if value.get("type") in _IMAGE_TYPES:
            return image_allowance
        total = MESSAGE_FRAMING_TOKENS
        for key, item in value.items():
            if key == "images" and isinstance(item, list):
                total += image_allowance * len(item)
            else:
                total += json_bound(item, image_allowance)
        return total
    if isinstance(value, list):
        return sum(json_bound(item, image_allowance) for item in value)
    return 1 if value is not None else 0


def bound_of(parts: list[Any], image_allowance: int) -> int:
    """json_bound of several request parts, with the request's own framing."""
    return REQUEST_FRAMING_TOKENS + sum(json_bound(part, image_allowance) for part in parts)


def estimate_prompt_tokens(messages: list[JSON]) -> int:
    """A deliberately generous prompt estimate of chat messages (about 3 characters a token, plus framing)."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return chars // 3 + 4 * len(messages) + 1
