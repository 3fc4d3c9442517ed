"""Error types and their one JSON shape: OpenAI's everywhere, Ollama's on Ollama routes."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

OLLAMA_PREFIX = "/api/"
ANTHROPIC_PREFIX = "/v1/messages"
# Anthropic's error types by status (the official `anthropic` package's ErrorType).
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class GatehouseError(Exception):
    """An unexpected failure (a bug): the request id in the answer finds it in the log.

    Every error is a class with an HTTP status, a stable `code` (a public API: clients branch on it, and
    docs/errors.md lists every one) and a message that says what to do next. The generic classes below serve
    where no more precise code exists; each domain's own are in its errors.py.
    """

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.param = param


class BadRequest(GatehouseError):
    status = 400
    type = "invalid_request_error"
    code = "bad_request"


class ValidationFailed(GatehouseError):
    status = 422
    type = "invalid_request_error"
    code = "validation_error"


class Unauthorized(GatehouseError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatehouseError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(GatehouseError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(GatehouseError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(GatehouseError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class TooManyRequests(GatehouseError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class UpstreamError(GatehouseError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(GatehouseError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class Unavailable(GatehouseError):
    status = 503
    type = "server_error"
    code = "unavailable"


class DatabaseUnavailable(Unavailable):
    """The database does not answer, or has no connection left: retry after Retry-After (1 s)."""

    code = "database_unavailable"


class ErrorDetail(BaseModel):
    """What went wrong: `code` is stable (docs/errors.md), `message` says what to do next."""

    type: str = Field(description="The kind of error, e.g. invalid_request_error, not_found_error.")
    code: str = Field(description="Gatehouse's stable error code (docs/errors.md lists every one).")
    message: str = Field(description="What went wrong and what to do next.")
    param: str | None = Field(default=None, description="The field or parameter at fault, when there is one.")


class ErrorBody(BaseModel):
    """The error body of the admin, auth and /me routes (and OpenAI's /v1 surfaces): OpenAI's shape."""

    error: ErrorDetail


# What a status means, for the OpenAPI document's response descriptions.
STATUS_MEANINGS = {
    400: "Bad request",
    401: "No credentials, or invalid ones",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body over MAX_REQUEST_BYTES",
    422: "Invalid parameters or body",
    429: "Rate limit reached (see Retry-After)",
    502: "The upstream failed",
    503: "Unavailable (see Retry-After)",
    504: "The upstream timed out",
}


def errors(*classes: type[GatehouseError]) -> dict[int | str, dict[str, Any]]:
    """`responses=errors(UserNotFound, EmailTaken)`: the statuses a route answers besides what every route of its
    kind does (app.py's OpenAPI hook adds 401, 403, 413, 422, 429 and 503 where they apply), each with the error
    body and the codes it carries."""
    codes: dict[int, list[str]] = {}
    for cls in classes:
        codes.setdefault(cls.status, [])
        if cls.code not in codes[cls.status]:
            codes[cls.status].append(cls.code)
    return {
        status: {
            "model": ErrorBody,
            "description": f"{STATUS_MEANINGS.get(status, 'Error')}: " + ", ".join(f"`{code}`" for code in names),
        }
        for status, names in sorted(codes.items())
    }


def allowed_methods(request: Request) -> str:
    """The methods the request's path answers to (every route matching it), for a 405's `Allow` header."""
    methods: set[str] = set()
    path = request.scope.get("route_path") or request.url.path
    for route in iter_route_contexts(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(route.methods or ())
    return ", ".join(sorted(methods))


def error_style(path: str) -> str:
    """The protocol a route answers errors in: Ollama's on /api, Anthropic's on /v1/messages, else OpenAI's."""
    if path.startswith(OLLAMA_PREFIX):
        return "ollama"
    if path.startswith(ANTHROPIC_PREFIX):
        return "anthropic"
    return "openai"


def error_body(error: GatehouseError, *, style: str) -> dict[str, Any]:
    """The JSON body for an error in the caller's protocol. Anthropic's shape keeps Gatehouse's own code too
    (`error.code`), which Anthropic clients ignore and people reading it need."""
    if style == "ollama":
        return {"error": error.message}
    if style == "anthropic":
        kind = ANTHROPIC_ERROR_TYPES.get(error.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": error.message, "code": error.code}}
    body: dict[str, Any] = {"type": error.type, "code": error.code, "message": error.message}
    if error.param:
        body["param"] = error.param
    return {"error": body}


def error_response(error: GatehouseError, *, style: str) -> Response:
    """A complete response for an error."""
    return Response(
        orjson.dumps(error_body(error, style=style)),
        status_code=error.status,
        headers=error.headers,
        media_type="application/json",
    )


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """Turn pydantic's error list into one sentence naming each field."""
    parts = []
    first_field = None
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            # Its loc is ("body", <character offset>): name the body, not the offset.
            offset = err.get("loc", ("body",))[-1]
            detail = (err.get("ctx") or {}).get("error")
            first_field = first_field or "body"
            parts.append(f"body: not valid JSON at character {offset}" + (f" ({detail})" if detail else ""))
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        first_field = first_field or field
        parts.append(f"{field}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "Invalid request: " + "; ".join(parts) + more, first_field


# Driver errors that mean "cannot get or keep a connection" (not a bug in a statement).
_UNAVAILABLE_ERRORS = frozenset(
    {
        "TooManyConnectionsError",
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "InterfaceError",
    }
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means the database is out of reach or out of connections (a 503)."""
    if isinstance(exc, (SQLAlchemyTimeoutError, OperationalError, ConnectionError)):
        # ConnectionError: asyncpg's connect failures arrive unwrapped (upstream ones are caught in providers).
        return True
    if isinstance(exc, DBAPIError):
        return (
            bool(exc.connection_invalidated)
            or type(exc.orig).__name__ in _UNAVAILABLE_ERRORS
            or ("too many clients" in str(exc.orig))
        )
    return False


HTTP_CODES = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: BadRequest,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
}


def install_handlers(app: FastAPI) -> None:
    """Render every error in one shape."""

    async def on_gatehouse_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, GatehouseError):
            raise exc
        return error_response(exc, style=error_style(request.url.path))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, RequestValidationError):
            raise exc
        message, field = describe_validation(list(exc.errors()))
        return error_response(ValidationFailed(message, param=field), style=error_style(request.url.path))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):
            raise exc
        cls = HTTP_CODES.get(exc.status_code, GatehouseError)
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404:
            detail = f"No route {request.method} {request.url.path}: check the path and the API docs at /docs"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names only the first route matching the path; one route per method here.
            allow = allowed_methods(request)
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"} | {"allow": allow}
            detail = f"Method {request.method} is not allowed on {request.url.path}: use {allow}."
        err = cls(detail, status=exc.status_code, headers=headers)
        return error_response(err, style=error_style(request.url.path))

    async def on_database_error(request: Request, exc: Exception) -> Response:
        if not database_unavailable(exc):
            raise exc
        logging.getLogger("gatehouse.db").warning("database_unavailable: %s", type(exc).__name__)
        err = DatabaseUnavailable(
            "The database is unavailable or out of connections: retry in a moment.", headers={"retry-after": "1"}
        )
        return error_response(err, style=error_style(request.url.path))

    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(ConnectionError, on_database_error)
    app.add_exception_handler(SQLAlchemyTimeoutError, on_database_error)
    app.add_exception_handler(GatehouseError, on_gatehouse_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
