"""Reading the JSON API from a page handler: an in-process request through the whole ASGI app (middleware,
authentication, the route's access declaration), carrying the viewer's own cookies. No second source of truth:
a page shows what the API answers, and a role the API refuses is refused on the page too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import Request

_FORWARDED = ("cookie", "user-agent", "x-request-id", "accept-language")


class ApiError(Exception):
    """The API answered with an error: its status and its message (the `error.message` of our error shape)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("code") or status)
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
        else:
            message = f"HTTP {status}"
        super().__init__(message)
        self.message = message


async def get(request: Request, path: str, params: Mapping[str, Any] | None = None) -> Any:
    """GET an API path as the viewer; the parsed JSON, or ApiError."""
    return await call(request, "GET", path, params=params)


async def call(
    request: Request, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
) -> Any:
    """Call an API path as the viewer (their cookies); the parsed JSON, or ApiError."""
    client = request.client
    transport = httpx.ASGITransport(
        app=request.app, client=(client.host, client.port) if client is not None else ("127.0.0.1", 0)
    )
    headers = {name: value for name in _FORWARDED if (value := request.headers.get(name)) is not None}
    clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.console", headers=headers) as http:
        response = await http.request(method, path, params=clean, json=json)
    body: Any = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    if response.status_code >= 400:
        raise ApiError(response.status_code, body)
    return body
