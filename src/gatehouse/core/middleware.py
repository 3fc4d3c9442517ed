"""Pure-ASGI middleware: request id, access log, request metrics, the IP blocklist, body-size limit, the JSON
APIs' content type and nesting depth, and the last-resort 500, in one pass."""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.core.ids import new_id
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import HTTP_REQUEST_DURATION, IP_BLOCKED_REQUESTS, child, http_method_label, route_label
from gatehouse.core.transport import MAX_HEAD_BYTES, HeadersTooLarge
from gatehouse.errors import BadRequest, Forbidden, GatehouseError, PayloadTooLarge, error_body, error_style

log = get_logger("gatehouse.access")
REQUEST_ID_HEADER = b"x-request-id"
MAX_INCOMING_ID = 64  # request_log.request_id is String(64): a longer id would fail its INSERT


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1")
            # Accept a caller's id only when it is short and printable, so it cannot forge log lines.
            if 0 < len(text) <= MAX_INCOMING_ID and text.isprintable():
                return text
            return None
    return None


class FastPathLike(Protocol):
    """The gateway's direct dispatch of its hot routes (gateway/fastpath.py)."""

    def match(self, scope: Scope) -> Any: ...

    async def __call__(self, endpoint: Any, scope: Scope, receive: Receive, send: Send) -> None: ...


class BlocklistLike(Protocol):
    """The IP blocklist as loaded on this replica (blocklist/matcher.py)."""

    count: int

    def blocks(self, host: str) -> bool: ...


# Load balancers and orchestrators probe these: a blocked address there must not take the replica out of service.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class IpBlocked(Forbidden):
    """The request came from an address on the blocklist (blocklist/errors.py documents the code)."""

    code = "ip_blocked"


class UnsupportedMediaType(GatehouseError):
    """A JSON API got a body of another media type (a form, plain text, multipart)."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class JsonTooDeep(BadRequest):
    """The JSON body nests arrays and objects deeper than MAX_JSON_DEPTH."""

    code = "json_too_deep"


# The JSON APIs: their bodies are JSON (the console's pages, under /console, post forms).
JSON_API_PREFIXES = ("/v1/", "/api/", "/admin/")
# Deeper than any real request (a tool's JSON schema included), and well under what Python's json module can
# parse before a RecursionError (the admin routes parse with it; the gateway's orjson stops at 1024 by itself).
MAX_JSON_DEPTH = 512
_ORJSON_DEPTH = 1024  # orjson's own limit: the check wraps the body in (this - MAX_JSON_DEPTH) levels


def body_problem(path: str, content_type: bytes | None, body: bytes, *, hot: bool) -> GatehouseError | None:
    """Why a JSON API must refuse this body before any route reads it: not JSON by its content type (a missing
    one is taken for JSON, as the providers' APIs take it), or nested too deep. None when it may go on."""
    if not body or not path.startswith(JSON_API_PREFIXES):
        return None
    if content_type is not None:
        media = content_type.split(b";", 1)[0].strip().lower()
        if media and media != b"application/json" and not media.endswith(b"+json"):
            shown = media.decode("latin-1")[:100]
            return UnsupportedMediaType(
                f"The body must be JSON, sent with Content-Type: application/json (this request said {shown})."
            )
    if hot:
        return None  # the gateway's routes parse with orjson: not UTF-8 or deeper than 1024 levels is their 400
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        return BadRequest(f"The body is not valid UTF-8 (at byte {exc.start}): send JSON text encoded as UTF-8.")
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        pad = _ORJSON_DEPTH - MAX_JSON_DEPTH
        try:
            orjson.loads(b"[" * pad + body + b"]" * pad)
        except orjson.JSONDecodeError as exc:
            if "depth" in str(exc):
                return JsonTooDeep(f"The JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep.")
    return None


class RequestContextMiddleware:
    """Gives every request an id (X-Request-ID in and out), logs one access line, caps the body size, and
    turns an unhandled exception into the JSON 500 (with the request id) after logging its traceback."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        fast_path: FastPathLike | None = None,
        blocklist: BlocklistLike | None = None,
        blocked_message: str = "Requests from your network address are blocked: contact the administrator.",
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.fast_path = fast_path
        self.blocklist = blocklist
        self.blocked_message = blocked_message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or new_id(32)
        # A copy: some servers and test harnesses share one state dict between requests.
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        header_value = request_id.encode("latin-1")
        limit = self.max_body_bytes

        # First, before the body is read: an empty list costs this one attribute read.
        blocklist = self.blocklist
        if blocklist is not None and blocklist.count and self._blocked(blocklist, scope):
            IP_BLOCKED_REQUESTS.inc()
            await _send_error(send, IpBlocked(self.blocked_message), scope, header_value)
            self._log(scope, 403, started)
            return

        content_type: bytes | None = None
        head_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        for name, value in scope["headers"]:
            head_bytes += len(name) + len(value) + 4
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_error(send, self._too_large(), scope, header_value)
                self._log(scope, 413, started)
                return
            if name == b"content-type":
                content_type = value
        if head_bytes > MAX_HEAD_BYTES:  # one read of the server took it whole: the transport saw no partial head
            await _send_error(send, HeadersTooLarge(HeadersTooLarge.__doc__ or ""), scope, header_value)
            self._log(scope, HeadersTooLarge.status, started)
            return

        fast_path = self.fast_path
        endpoint = fast_path.match(scope) if fast_path is not None else None
        app_receive = receive
        if scope["method"] in BODY_METHODS:
            # Read the body (bounded) before the app runs: an oversized one is then a clean 413 on every
            # route, whatever parses it, and the app reads the same bytes from memory.
            first = await _read_body(receive, limit)
            if first is None:
                await _send_error(send, self._too_large(), scope, header_value)
                self._log(scope, 413, started)
                return
            body = first.get("body", b"")
            refused = body_problem(scope["path"], content_type, body, hot=endpoint is not None)
            if refused is not None:
                await _send_error(send, refused, scope, header_value)
                self._log(scope, refused.status, started)
                return
            if content_type is None and body and scope["path"].startswith(JSON_API_PREFIXES):
                # Taken for JSON (as the providers take it): said so for the routes that parse by content type.
                scope["headers"] = [*scope["headers"], (b"content-type", b"application/json")]
            replayed = False

            async def app_receive() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return first
                return await receive()

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, header_value)]
            await send(message)

        try:
            if fast_path is not None and endpoint is not None:
                await fast_path(endpoint, scope, app_receive, send_with_id)
            else:
                await self.app(scope, app_receive, send_with_id)
        except Exception:
            if started_response:
                raise  # too late for an error body: the server aborts the response (and logs the traceback)
            # A bug: the traceback goes to the log (never the request body), the caller gets an id to quote.
            log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            status = 500
            detail = f"Internal error; the request id is {request_id}: quote it to an operator."
            await _send_error(send, GatehouseError(detail), scope, header_value)
        finally:
            self._log(scope, status, started)

    @staticmethod
    def _blocked(blocklist: BlocklistLike, scope: Scope) -> bool:
        # The client as uvicorn resolved it: behind FORWARDED_ALLOW_IPS proxies, their X-Forwarded-For.
        client = scope.get("client")
        if client is None or not blocklist.blocks(client[0]):
            return False
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        return (path[len(root) :] if root and path.startswith(root) else path) not in PROBE_PATHS

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body exceeds {self.max_body_bytes} bytes (MAX_REQUEST_BYTES)")

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        duration = time.perf_counter() - started
        # The route template the router matched (set in scope["route"]), never the raw path: one series per route.
        child(HTTP_REQUEST_DURATION, route_label(scope), http_method_label(scope["method"]), str(status)).observe(
            duration
        )
        extra: dict[str, Any] = {}
        state = scope.get("state") or {}
        if "user_id" in state:
            extra["user_id"] = state["user_id"]
        client = scope.get("client")
        log.info(
            "request",
            method=scope["method"],
            path=scope["path"],
            status=status,
            duration_ms=round(duration * 1000, 2),
            client_ip=client[0] if client else None,
            **extra,
        )


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _send_error(send: Send, error: GatehouseError, scope: Scope, request_id: bytes) -> None:
    """A complete JSON error response, in the caller's protocol, carrying the request id."""
    body = orjson.dumps(error_body(error, style=error_style(scope["path"])))
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (REQUEST_ID_HEADER, request_id),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> Message | None:
    """The whole request body as one message, or None when it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message  # the client went away: let the app see it
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            return None
        chunks.append(body)
        if not message.get("more_body", False):
            return {
                "type": "http.request",
                "body": b"".join(chunks) if len(chunks) != 1 else chunks[0],
                "more_body": False,
            }
