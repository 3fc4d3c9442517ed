"""Stream relays: upstream lines (SSE or NDJSON) in, client bytes out, for each protocol pair.

Same-protocol streams pass through line by line, parsed only where usage or errors live; cross-protocol
streams go through the translators in `translate`. A failure mid-stream ends with an error event in the
client's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson
from starlette.responses import Response, StreamingResponse

from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import SSE_PINGS
from gatehouse.errors import GatehouseError, UpstreamTimeout
from gatehouse.gateway import ir
from gatehouse.gateway.call import Call, finish_shielded
from gatehouse.gateway.context import Gateway
from gatehouse.gateway.errors import (
    CLIENT_DISCONNECTED,
    RelayFailed,
    Terminated,
    UpstreamBadResponse,
    UpstreamDisconnected,
    UpstreamFailed,
)
from gatehouse.gateway.translate import anthropic
from gatehouse.gateway.translate.common import UpstreamStreamError, error_message
from gatehouse.gateway.translate.usage import usage_from_ollama, usage_from_openai
from gatehouse.upstreams.providers import UpstreamResponse, UpstreamTimedOut, UpstreamTooLarge, UpstreamUnreachable
from gatehouse.upstreams.upstream import Route

log = get_logger("gatehouse.gateway")
JSON = dict[str, Any]
Decoder = ir.Decoder
Encoder = ir.Encoder


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# A chunk that carries a token: some text, or a tool call. The first chunk of an OpenAI stream, {"role": "assistant",
# "content": ""}, carries none; counting it charged a stream cut short (no upstream usage) one token too many.
OPENAI_TOKEN_CHUNK = re.compile(rb'"(?:content|text)"\s*:\s*"[^"]|"tool_calls"')


def upstream_message(raw: bytes) -> str:
    """The human part of an upstream error body, whatever its shape."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace").strip() or "no details"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
        if "detail" in data:
            return str(data["detail"])
    return str(data)[:300]


class Framing(Protocol):
    """How a client protocol frames a stream: its media type, its keep-alive and its final error event (each
    surface's stream encoder is one)."""

    media_type: str

    def ping(self) -> bytes: ...

    def error(self, message: str, code: str) -> bytes: ...


class Relay:
    """Turns upstream lines into client bytes for one protocol pair."""

    # Whether the upstream's stream reached its protocol's final event; a passthrough starts False and sets it, and
    # a stream that ends before is an upstream that broke off (a clean close of the body is no proof of an answer).
    ended = True

    def __init__(self, call: Call, framing: Framing) -> None:
        self.call = call
        self.framing = framing
        self.completed = False
        self.renames: list[tuple[bytes, bytes]] = []

    def rename_model(self, upstream_model: str) -> None:
        """Show the client the model name it asked for (an alias), not the upstream's own."""
        if upstream_model != self.call.model:
            old, new = orjson.dumps(upstream_model), orjson.dumps(self.call.model)
            self.renames = [(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)]

    def _renamed(self, data: bytes) -> bytes:
        for old, new in self.renames:
            data = data.replace(old, new)
        return data

    def feed(self, line: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""

    async def complete(self) -> None:
        """Runs once the upstream's answer is whole, before its last bytes go to the client (a stored response is
        written here, so a client that continues it at once finds it)."""


def _sse_payload(line: bytes) -> bytes | None:
    if line.startswith(b"data:"):
        return line[5:].strip()
    return None


class OpenAIPassthrough(Relay):
    """An OpenAI-compatible upstream's SSE to an OpenAI client: chat completions or legacy completions. Every chunk
    is checked to be JSON (a client must never get a broken one); the stream has ended with `[DONE]` or a chunk
    with a finish_reason (some servers send no `[DONE]`)."""

    ended = False

    def __init__(self, call: Call, framing: Framing, client_wants_usage: bool) -> None:
        super().__init__(call, framing)
        self.client_wants_usage = client_wants_usage

    def feed(self, line: bytes) -> bytes:
        payload = _sse_payload(line)
        if payload is None:
            return line + b"\n\n" if line.startswith(b":") else (line + b"\n" if line else b"")
        if payload == b"[DONE]":
            self.ended = True
            return b"data: [DONE]\n\n"
        obj = orjson.loads(payload)
        if not isinstance(obj, dict):
            raise ValueError("a stream chunk that is not a JSON object")
        if not self.ended and b'"finish_reason":' in payload:
            choices = obj.get("choices")
            self.ended = isinstance(choices, list) and any(
                isinstance(c, dict) and c.get("finish_reason") for c in choices
            )
        # Usage is asked for on every stream, so most chunks carry "usage":null: look only at a real one.
        if b'"usage":{' in payload or b'"usage": {' in payload or b'"error"' in payload:
            if obj.get("error"):
                raise UpstreamStreamError(upstream_message(payload))
            usage = usage_from_openai(obj)
            if usage is not None:
                self.call.set_usage(usage)
                if not self.client_wants_usage and not obj.get("choices"):
                    return b""
        if OPENAI_TOKEN_CHUNK.search(payload):
            self.call.saw_token()
        if self.renames:
            payload = self._renamed(payload)
        return b"data: " + payload + b"\n\n"


class OllamaPassthrough(Relay):
    """Ollama's NDJSON to an Ollama client: chat or generate. Every line is checked to be a JSON object; the
    stream has ended with a `done` one."""

    ended = False

    def feed(self, line: bytes) -> bytes:
        if not line.strip():
            return b""
        obj = orjson.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("a stream line that is not a JSON object")
        if obj.get("error"):
            raise UpstreamStreamError(str(obj["error"]))
        if obj.get("done") is True:
            self.ended = True
            self.call.set_usage(usage_from_ollama(obj))
        else:
            self.call.saw_token()
        if self.renames:
            line = self._renamed(line)
        return line + b"\n"


class AnthropicPassthrough(Relay):
    """An Anthropic upstream's Messages stream to an Anthropic client: usage from message_start (the prompt) and
    message_delta (the output, and the prompt again where the server says it last)."""

    ended = False

    def __init__(self, call: Call, framing: Framing) -> None:
        super().__init__(call, framing)
        self.usage: dict[str, Any] = {}

    def feed(self, line: bytes) -> bytes:
        if line.startswith(b"data:"):
            event = orjson.loads(line[5:])
            if not isinstance(event, dict):
                raise ValueError("a stream event that is not a JSON object")
            if b'"content_block_delta"' in line:
                self.call.saw_token()
            elif b'"message_stop"' in line:
                self.ended = event.get("type") == "message_stop"
            elif b'"message_start"' in line or b'"message_delta"' in line or b'"type":"error"' in line:
                kind = event.get("type")
                if kind == "error":
                    raise UpstreamStreamError(error_message(event))
                usage = (event.get("message") or {}).get("usage") if kind == "message_start" else event.get("usage")
                if isinstance(usage, dict):
                    self.usage.update({k: v for k, v in usage.items() if v is not None})
                    counted = anthropic.decode_usage(self.usage)
                    if counted is not None:
                        self.call.set_usage(counted.counts())
            if self.renames:
                line = self._renamed(line)
        return line + b"\n"


class ResponsesPassthrough(Relay):
    """An upstream's own Responses stream to a Responses client: usage and the whole Response from its final
    event (response.completed or response.incomplete), which `on_final` stores."""

    def __init__(self, call: Call, framing: Framing, on_final: Callable[[JSON], Awaitable[None]]) -> None:
        super().__init__(call, framing)
        self.on_final = on_final
        self.final: JSON | None = None

    ended = False

    def feed(self, line: bytes) -> bytes:
        if line.startswith(b"data:"):
            event = orjson.loads(line[5:])
            if not isinstance(event, dict):
                raise ValueError("a stream event that is not a JSON object")
            if b'.delta"' in line:
                self.call.saw_token()
            elif b'"response.completed"' in line or b'"response.incomplete"' in line or b'"error"' in line:
                kind = event.get("type")
                if kind == "error":
                    raise UpstreamStreamError(error_message(event))
                response = event.get("response")
                if kind in ("response.completed", "response.incomplete") and isinstance(response, dict):
                    self.ended = True
                    usage = response.get("usage")
                    if isinstance(usage, dict):
                        details = usage.get("input_tokens_details")
                        cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
                        self.call.set_usage((usage.get("input_tokens") or 0, usage.get("output_tokens") or 0, cached))
                    self.final = response
            if self.renames:
                line = self._renamed(line)
        return line + b"\n"

    async def complete(self) -> None:
        if self.final is not None:
            await self.on_final(self.final)


class TranslatingRelay(Relay):
    """Any upstream's stream to a client of another protocol: the upstream's decoder makes events of the
    internal representation, the client's encoder makes its bytes."""

    def __init__(
        self, call: Call, decoder: Decoder, encoder: Encoder, on_complete: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(call, encoder)
        self.decoder = decoder
        self.encoder = encoder
        self.on_complete = on_complete

    def feed(self, line: bytes) -> bytes:
        events = self.decoder.feed(line)
        if not events:
            return b""
        for event in events:
            if isinstance(event, ir.CONTENT_EVENTS):
                self.call.saw_token()
        usage = self.decoder.usage
        if usage is not None:
            self.call.set_usage(usage.counts())
        return self.encoder.encode(events)

    def finish(self) -> bytes:
        usage = self.decoder.usage
        if usage is not None:
            self.call.set_usage(usage.counts())
        return self.encoder.finish(usage)

    async def complete(self) -> None:
        if self.on_complete is not None:
            await self.on_complete()


class RelayResponse(StreamingResponse):
    """A streamed answer whose clean-up runs however the response ends, even if it never started."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]],
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers={**SSE_HEADERS, **(headers or {})})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


def relay_response(
    gateway: Gateway, call: Call, response: UpstreamResponse, relay: Relay, headers: dict[str, str] | None = None
) -> Response:
    """The streamed answer: relayed line by line, settled when it ends however it ends."""

    if call.live is not None:
        call.live.on_terminate(response.close)

    async def on_close() -> None:
        await _settle(gateway, call, response, completed=relay.completed)

    stream = _relay_stream(call, response, relay, gateway.settings.stream_ping_seconds)
    return RelayResponse(stream, on_close=on_close, media_type=relay.framing.media_type, headers=headers)


async def _settle(gateway: Gateway, call: Call, response: UpstreamResponse | None, *, completed: bool) -> None:
    """However a streamed answer ended: abort the upstream (a no-op once it finished) and settle the call.
    Starlette cancels the body iterator when the client disconnects: a stream that did not complete and
    recorded no error of its own was abandoned by its client."""
    if not completed and call.error_code is None:
        call.status_code, call.error_code = 499, CLIENT_DISCONNECTED
    if response is not None:
        response.close()
    await finish_shielded(gateway, call)


Opening = asyncio.Future[tuple[Route, UpstreamResponse]]


def _cancel(opening: Opening) -> None:
    opening.cancel()


def late_relay_response(
    gateway: Gateway,
    call: Call,
    opening: Opening,
    make_relay: Callable[[Route], Relay],
    framing: Framing,
    headers: dict[str, str] | None = None,
) -> Response:
    """A streamed answer started before the upstream's response head arrived (a model still loading, say): the
    client gets keep-alives meanwhile, and an upstream failure (after any failover) as a final error event."""
    ping = gateway.settings.stream_ping_seconds
    ended = False
    if call.live is not None:
        call.live.on_terminate(lambda: _cancel(opening))  # then, once the head is in: closing the response

    async def on_close() -> None:
        opening.cancel()  # no effect once the attempt is over, which is awaited before settling
        response = None
        with contextlib.suppress(BaseException):
            _, response = await opening
        await _settle(gateway, call, response, completed=ended)

    async def stream() -> AsyncIterator[bytes]:
        nonlocal ended
        while not opening.done():
            await asyncio.wait({opening}, timeout=ping)
            if not opening.done():
                SSE_PINGS.inc()
                yield framing.ping()
        error: GatehouseError
        try:
            route, response = opening.result()
        except asyncio.CancelledError:
            error = call.termination()
        except GatehouseError as exc:
            error = exc
        except Exception:
            log.exception("relay_failed", upstream=call.upstream)
            error = RelayFailed("The relay failed; the request id identifies it in the log.")
        else:
            if call.live is not None:
                call.live.on_terminate(response.close)
            relay = make_relay(route)
            async for chunk in _relay_stream(call, response, relay, ping):
                yield chunk
            ended = relay.completed
            return
        call.fail(error)
        ended = True
        yield framing.error(error.message, error.code)

    return RelayResponse(stream(), on_close=on_close, media_type=framing.media_type, headers=headers)


async def _relay_stream(
    call: Call, response: UpstreamResponse, relay: Relay, ping_seconds: float
) -> AsyncIterator[bytes]:
    """Client bytes for each upstream line; a mid-stream failure ends with an error event in the client's shape."""
    error: GatehouseError
    try:
        async for batch in response.lines(idle=ping_seconds):
            # Once the client is gone uvicorn's send returns at once, and an upstream faster than the relay always
            # has a line buffered: without this turn of the loop nothing here would ever wait, the disconnect would
            # never be heard, and the whole answer would be read (and paid for) for nobody.
            await asyncio.sleep(0)
            if call.terminated:
                break  # an in-process upstream (the demo) is not stopped by closing: stop reading it
            if batch is None:  # the upstream has been silent for ping_seconds
                SSE_PINGS.inc()
                yield relay.framing.ping()
                continue
            if len(batch) == 1:
                out = relay.feed(batch[0])
            else:  # lines that arrived together leave together: one write to the client, not one per token
                done: list[bytes] = []
                try:
                    for line in batch:
                        done.append(relay.feed(line))
                except Exception:
                    if any(done):
                        yield b"".join(done)  # what came before the bad line still reaches the client
                    raise
                out = b"".join(done)
            if out:
                yield out
        if call.terminated:
            raise call.termination()
        if not relay.ended:
            raise UpstreamUnreachable("the stream ended before its final event")
        tail = relay.finish()
        await relay.complete()
        if tail:
            yield tail
        relay.completed = True
        return
    except Terminated as exc:
        error = exc
    except UpstreamStreamError as exc:
        error = UpstreamFailed(f"Upstream {call.upstream} reported an error: {exc}")
    except UpstreamTimedOut:
        error = UpstreamTimeout(f"Upstream {call.upstream} went silent mid-answer (read timeout).")
    except UpstreamTooLarge as exc:
        error = UpstreamBadResponse(f"Upstream {call.upstream} sent {exc}.")
    except UpstreamUnreachable as exc:
        if call.terminated:
            error = call.termination()
        else:
            error = UpstreamDisconnected(f"Upstream {call.upstream} broke off the answer: {exc}")
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError, KeyError) as exc:
        # Malformed upstream output: logged without the payload (it may hold message contents).
        log.error("upstream_stream_malformed", upstream=call.upstream, error_type=type(exc).__name__)
        error = UpstreamBadResponse(f"Upstream {call.upstream} sent a malformed stream.")
    except Exception:
        log.exception("relay_failed", upstream=call.upstream)
        error = RelayFailed("The relay failed mid-stream; the request id identifies it in the log.")
    call.fail(error)
    yield relay.framing.error(error.message, error.code)
    relay.completed = True
