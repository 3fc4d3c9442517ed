"""Stream relays: upstream lines (SSE or NDJSON) in, client bytes out, for each protocol pair.

Same-protocol streams pass through line by line, parsed only where usage or errors live; cross-protocol
streams go through the translators in `translate`. A failure mid-stream ends with an error event in the
client's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import SSE_PINGS
from gatehouse.errors import GatehouseError, UpstreamTimeout
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
from gatehouse.gateway.translate.common import UpstreamStreamError
from gatehouse.gateway.translate.stream import OllamaToOpenAIStream, OpenAIToOllamaStream
from gatehouse.gateway.translate.usage import usage_from_ollama, usage_from_openai
from gatehouse.upstreams.config import UpstreamKind
from gatehouse.upstreams.providers import UpstreamResponse, UpstreamTimedOut, UpstreamUnreachable
from gatehouse.upstreams.upstream import Route

log = get_logger("gatehouse.gateway")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


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


class Relay:
    """Turns upstream lines into client bytes for one protocol pair."""

    def __init__(self, call: Call) -> None:
        self.call = call
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


def ping_bytes(call: Call) -> bytes:
    """A keep-alive for a silent upstream: an SSE comment, or for NDJSON (Ollama) clients a chunk with empty
    content, which every Ollama client parses as an ordinary, empty, piece of the answer."""
    if call.protocol == "openai":
        return b": ping\n\n"
    return (
        orjson.dumps(
            {
                "model": call.model,
                "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "message": {"role": "assistant", "content": ""},
                "done": False,
            }
        )
        + b"\n"
    )


def error_bytes(call: Call, message: str, code: str) -> bytes:
    """A final error event in the client's stream format."""
    if call.protocol == "openai":
        return (
            b"data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error", "code": code}}) + b"\n\n"
        )
    return orjson.dumps({"error": message}) + b"\n"


def _sse_payload(line: bytes) -> bytes | None:
    if line.startswith(b"data:"):
        return line[5:].strip()
    return None


class _OpenAIPassthrough(Relay):
    def __init__(self, call: Call, client_wants_usage: bool) -> None:
        super().__init__(call)
        self.client_wants_usage = client_wants_usage

    def feed(self, line: bytes) -> bytes:
        payload = _sse_payload(line)
        if payload is None:
            return line + b"\n\n" if line.startswith(b":") else (line + b"\n" if line else b"")
        if payload == b"[DONE]":
            return b"data: [DONE]\n\n"
        # Usage is asked for on every stream, so most chunks carry "usage":null: parse only a real one.
        if b'"usage":{' in payload or b'"usage": {' in payload or b'"error"' in payload:
            obj = orjson.loads(payload)
            if isinstance(obj, dict):
                if obj.get("error"):
                    raise UpstreamStreamError(upstream_message(payload))
                usage = usage_from_openai(obj)
                if usage is not None:
                    self.call.set_usage(usage)
                    if not self.client_wants_usage and not obj.get("choices"):
                        return b""
        if b'"content"' in payload or b'"tool_calls"' in payload:
            self.call.saw_token()
        if self.renames:
            payload = self._renamed(payload)
        return b"data: " + payload + b"\n\n"


class _OllamaPassthrough(Relay):
    def feed(self, line: bytes) -> bytes:
        if not line.strip():
            return b""
        if b'"done":true' in line or b'"done": true' in line or b'"error"' in line:
            obj = orjson.loads(line)
            if isinstance(obj, dict):
                if obj.get("error"):
                    raise UpstreamStreamError(str(obj["error"]))
                self.call.set_usage(usage_from_ollama(obj))
        else:
            self.call.saw_token()
        if self.renames:
            line = self._renamed(line)
        return line + b"\n"


class _OllamaToOpenAI(Relay):
    def __init__(self, call: Call, client_wants_usage: bool) -> None:
        super().__init__(call)
        self.translator = OllamaToOpenAIStream(
            model=call.model, request_id=call.request_id, created=int(time.time()), include_usage=client_wants_usage
        )

    def feed(self, line: bytes) -> bytes:
        if not line.strip():
            return b""
        event = orjson.loads(line)
        chunks = self.translator.feed(event)
        if not event.get("done"):
            self.call.saw_token()
        self.call.set_usage(self.translator.usage)
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)

    def finish(self) -> bytes:
        return b"data: [DONE]\n\n"


class _OpenAIToOllama(Relay):
    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self.translator = OpenAIToOllamaStream(model=call.model)

    def feed(self, line: bytes) -> bytes:
        payload = _sse_payload(line)
        if payload is None or payload == b"[DONE]":
            return b""
        chunk = orjson.loads(payload)
        events = self.translator.feed(chunk)
        if events:
            self.call.saw_token()
        self.call.set_usage(self.translator.usage)
        return b"".join(orjson.dumps(e) + b"\n" for e in events)

    def finish(self) -> bytes:
        events = self.translator.finish()
        self.call.set_usage(self.translator.usage)
        return b"".join(orjson.dumps(e) + b"\n" for e in events)


def stream_relay(call: Call, upstream_kind: UpstreamKind, client_wants_usage: bool) -> Relay:
    if call.protocol == "openai":
        if upstream_kind is UpstreamKind.OPENAI:
            return _OpenAIPassthrough(call, client_wants_usage)
        return _OllamaToOpenAI(call, client_wants_usage)
    if upstream_kind is UpstreamKind.OLLAMA:
        return _OllamaPassthrough(call)
    return _OpenAIToOllama(call)


class RelayResponse(StreamingResponse):
    """A streamed answer whose clean-up runs however the response ends, even if it never started."""

    def __init__(
        self, content: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]], media_type: str
    ) -> None:
        super().__init__(content, media_type=media_type, headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


def relay_response(gateway: Gateway, call: Call, response: UpstreamResponse, relay: Relay) -> Response:
    """The streamed answer: relayed line by line, settled when it ends however it ends."""

    if call.live is not None:
        call.live.on_terminate(response.close)

    async def on_close() -> None:
        await _settle(gateway, call, response, completed=relay.completed)

    stream = _relay_stream(call, response, relay, gateway.settings.stream_ping_seconds)
    return RelayResponse(stream, on_close=on_close, media_type=_media(call))


async def _settle(gateway: Gateway, call: Call, response: UpstreamResponse | None, *, completed: bool) -> None:
    """However a streamed answer ended: abort the upstream (a no-op once it finished) and settle the call.
    Starlette cancels the body iterator when the client disconnects: a stream that did not complete and
    recorded no error of its own was abandoned by its client."""
    if not completed and call.error_code is None:
        call.status_code, call.error_code = 499, CLIENT_DISCONNECTED
    if response is not None:
        response.close()
    await finish_shielded(gateway, call)


def _media(call: Call) -> str:
    return "text/event-stream" if call.protocol == "openai" else "application/x-ndjson"


Opening = asyncio.Future[tuple[Route, UpstreamResponse]]


def _cancel(opening: Opening) -> None:
    opening.cancel()


def late_relay_response(
    gateway: Gateway, call: Call, opening: Opening, make_relay: Callable[[Route], Relay]
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
                yield ping_bytes(call)
        error: GatehouseError
        try:
            route, response = opening.result()
        except asyncio.CancelledError:
            error = Terminated(call.terminated or "terminated by an operator")
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
        yield error_bytes(call, error.message, error.code)

    return RelayResponse(stream(), on_close=on_close, media_type=_media(call))


async def _relay_stream(
    call: Call, response: UpstreamResponse, relay: Relay, ping_seconds: float
) -> AsyncIterator[bytes]:
    """Client bytes for each upstream line; a mid-stream failure ends with an error event in the client's shape."""
    error: GatehouseError
    try:
        async for batch in response.lines(idle=ping_seconds):
            if call.terminated:
                break  # an in-process upstream (the demo) is not stopped by closing: stop reading it
            if batch is None:  # the upstream has been silent for ping_seconds
                SSE_PINGS.inc()
                yield ping_bytes(call)
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
            raise Terminated(call.terminated)
        tail = relay.finish()
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
    except UpstreamUnreachable as exc:
        if call.terminated:
            error = Terminated(call.terminated)
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
    yield error_bytes(call, error.message, error.code)
    relay.completed = True
