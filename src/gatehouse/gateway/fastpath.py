"""The gateway's hot routes (every generation surface, and embeddings), dispatched without FastAPI's router
and dependency injection.

FastAPI stays the source of these routes (their OpenAPI entries, their access declaration, their
handlers); this only skips the machinery between the outer middleware and the handler: matching the path
against every route in turn, the exception and exit-stack middlewares, and solving dependencies. A
profile put that at about a third of the gateway's CPU per request. The handler runs with the same access
check (`Access(Role.USER)`), the same arguments, and its errors go through the app's own exception
handlers, so a caller cannot tell the two paths apart (tests/integration/gateway/test_fastpath.py compares them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gatehouse.auth.access import Access
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role
from gatehouse.core.components import components_of
from gatehouse.gateway import routes
from gatehouse.gateway.context import Gateway

Endpoint = Callable[[Request, Principal, Gateway], Awaitable[Response]]
HOT: dict[str, Endpoint] = {
    "/v1/chat/completions": routes.openai_chat,
    "/v1/embeddings": routes.openai_embeddings,
    "/v1/responses": routes.openai_responses,
    "/v1/completions": routes.openai_completions,
    "/v1/messages": routes.anthropic_messages,
    "/api/chat": routes.ollama_chat,
    "/api/generate": routes.ollama_generate,
    "/api/embed": routes.ollama_embed,
}
ACCESS = Access(Role.USER)  # what `dependencies=USER` declares on each of them


def route_path(scope: Scope) -> str:
    """The path the router would match (without a root_path prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class FastPath:
    """Calls a hot route's handler directly (see the module docstring)."""

    def __init__(self) -> None:
        self._routes: dict[str, APIRoute] | None = None
        self.enabled = True  # off: every request takes FastAPI's way (the tests compare both)

    def match(self, scope: Scope) -> Endpoint | None:
        """The handler of a POST to a hot route, else None (the request takes the usual way)."""
        if scope["method"] != "POST" or not self.enabled:
            return None
        return HOT.get(route_path(scope))

    def _route(self, path: str) -> APIRoute | None:
        if self._routes is None:
            # The gateway router's own route objects (FastAPI keeps included routers nested, not copied).
            self._routes = {
                r.path: r
                for r in routes.router.routes
                if isinstance(r, APIRoute) and r.path in HOT and "POST" in (r.methods or ())
            }
        return self._routes.get(path)

    async def __call__(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope["app"]
        route = self._route(route_path(scope))
        if route is not None:
            scope["route"] = route  # the metrics' route label, as the router would set it
            scope["endpoint"] = route.endpoint
        scope.setdefault("path_params", {})
        request = Request(scope, receive)
        try:
            gateway = components_of(request).get(Gateway)
            tracer = gateway.tracer
            if tracer is None:
                principal = await ACCESS(request)
            else:
                with tracer.span("gatehouse.authentication"):
                    principal = await ACCESS(request)
            if principal is None:  # a role is required: Access returns a principal or raises
                raise RuntimeError("the gateway's access check let a request in without a principal")
            response = await endpoint(request, principal, gateway)
        except Exception as exc:
            handler = _handler_for(app, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(app: Any, exc: Exception) -> Any:
    """The app's exception handler for this error (the most specific class first), as Starlette picks it."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
