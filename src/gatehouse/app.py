"""The application factory: settings in, an ASGI app out. Mounts one router per domain, the error handlers and
the middleware; the lifespan is runtime.py's `running`, which builds everything and tears it down in order."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from gatehouse import __version__
from gatehouse.accounts.routes import router as accounts
from gatehouse.alerts.routes import router as alerts
from gatehouse.audit.routes import router as audit
from gatehouse.auth.access import Access
from gatehouse.backups.routes import router as backups
from gatehouse.blocklist.errors import BLOCKED_MESSAGE
from gatehouse.blocklist.matcher import Blocklist
from gatehouse.blocklist.routes import router as blocklist
from gatehouse.configuration.reload import Reloader
from gatehouse.configuration.routes import router as configuration
from gatehouse.core.components import Components
from gatehouse.core.logging import configure_logging
from gatehouse.core.middleware import RequestContextMiddleware
from gatehouse.core.tracing import start_tracing, tracing, tracing_wanted
from gatehouse.deps import get_session
from gatehouse.errors import STATUS_MEANINGS, ErrorBody, error_style, install_handlers
from gatehouse.exports.routes import router as exports
from gatehouse.gateway.fastpath import FastPath
from gatehouse.gateway.routes import router as gateway
from gatehouse.jobs.routes import router as jobs
from gatehouse.limits.prices.routes import router as prices
from gatehouse.limits.routes import router as limits
from gatehouse.monitoring.loglevel_routes import router as log_level
from gatehouse.monitoring.routes import router as monitoring
from gatehouse.reports.routes import router as reports
from gatehouse.runtime import PREPARED_ENV, announce, check_settings, prepare, running
from gatehouse.settings import Settings, get_settings
from gatehouse.upstreams.routes import router as upstreams
from gatehouse.web.routes import STATIC_PREFIX
from gatehouse.web.routes import router as console
from gatehouse.web.routes import static as console_static

# One router per domain; the order is the OpenAPI document's. The console's comes first: it owns `/`.
ROUTERS = (
    console,
    monitoring,
    log_level,
    accounts,
    audit,
    upstreams,
    gateway,
    limits,
    prices,
    reports,
    exports,
    jobs,
    backups,
    alerts,
    configuration,
    blocklist,
)


def _calls(dependant: Dependant) -> Iterator[Any]:
    """Every dependency a route runs, depth first."""
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _natural_statuses(route: RouteContext) -> dict[int, str]:
    """The statuses a route answers by its nature, whatever its service does: 401 and 403 behind an access
    declaration with a role (no or a wrong credential; a blocked, disabled or pending account, a role too low, a
    cookie change without CSRF), 400 and 413 with a body (not JSON; over MAX_REQUEST_BYTES), 422 with parameters
    or a body, 429 under a declared rate limit, 503 when it reads the database (authentication does)."""
    calls = list(_calls(route.dependant))
    access = next((call for call in calls if isinstance(call, Access)), None)
    protected = access is not None and access.role is not None
    statuses: dict[int, str] = {}
    if protected:
        statuses[401] = "`missing_api_key`, `invalid_api_key`, `expired_api_key`, `session_expired`"
        statuses[403] = "`forbidden` (role too low), `account_blocked`, `account_disabled`, `account_pending`"
        if (route.methods or set()) - {"GET", "HEAD", "OPTIONS"}:
            statuses[403] += ", `csrf_failed`"
        if access is not None and access.token_header is not None:
            statuses[401] += ", `token_not_configured`, `invalid_token`"
    if route.body_field is not None:
        statuses[400] = "`bad_request` (the body is not valid JSON)"
        statuses[413] = "`payload_too_large`"
    dependant = route.dependant
    if route.body_field is not None or dependant.path_params or dependant.query_params or dependant.header_params:
        statuses[422] = "`validation_error`"
    if any(getattr(call, "__name__", "").startswith(("rate_limited_", "rate_limit_")) for call in calls):
        statuses[429] = "`rate_limited`"
    if protected or get_session in calls:
        statuses[503] = "`database_unavailable`"
    return statuses


def _error_schema(style: str) -> dict[str, Any]:
    """The JSON schema of an error body in a surface's protocol (errors.error_body)."""
    if style == "ollama":
        return {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    if style == "anthropic":
        detail = {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}, "code": {"type": "string"}},
            "required": ["type", "message"],
        }
        return {
            "type": "object",
            "properties": {"type": {"const": "error"}, "error": detail},
            "required": ["type", "error"],
        }
    return {"$ref": "#/components/schemas/ErrorBody"}


def document_errors(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with every status each route can answer: those its route declares (errors.errors(...)
    next to the route), those it answers by its nature (_natural_statuses), and the error body of its surface in
    place of FastAPI's default 422 schema (the handlers in errors.py never answer that shape)."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs"))
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema or not route.path_format:
            continue
        error_schema = _error_schema(error_style(route.path_format))
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, codes in _natural_statuses(route).items():
                responses.setdefault(str(status), {"description": f"{STATUS_MEANINGS[status]}: {codes}"})
            for status, response in responses.items():
                if not status.startswith(("4", "5")):
                    continue
                content = response.setdefault("content", {}).setdefault("application/json", {})
                schema = content.get("schema", {})
                if not schema or schema.get("$ref", "").endswith("/HTTPValidationError"):
                    content["schema"] = error_schema
                if status == "422" and response.get("description") == "Validation Error":
                    response["description"] = f"{STATUS_MEANINGS[422]}: `validation_error`"
    app.openapi_schema = document
    return document


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app for these settings (default: from the environment)."""
    handed_in = settings is not None
    settings = settings or get_settings()
    configure_logging(settings)
    check_settings(settings)
    components = Components()
    # OpenTelemetry (OTEL_ENABLED): off, nothing of its SDK is imported and no hook runs on a request.
    tracer = start_tracing(service_version=__version__) if tracing_wanted(settings.otel_enabled) else None
    # Built here, filled by the lifespan's loader: the outer middleware reads it on every request.
    blocked = Blocklist()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if os.environ.get(PREPARED_ENV) != "1":
            announce(await prepare(settings))
        with tracing(tracer):  # outside `running`: the settlements drained at its end are exported too
            async with running(settings, components, blocklist=blocked) as runtime:
                app.state.runtime = runtime
                if handed_in:  # settings made in code (tests, an embedding program), not read: a reload keeps them
                    frozen = settings
                    runtime.components.get(Reloader).reread = lambda: frozen
                runtime.gateway.tracer = tracer
                yield

    app = FastAPI(
        title="Gatehouse",
        version=__version__,
        lifespan=lifespan,
        description="A self-hosted AI gateway: OpenAI- and Ollama-compatible, with keys, quotas and audit.",
        # Gatehouse has its own metrics (Prometheus) and logs; FastAPI's OpenTelemetry hooks would only cost
        # a provider lookup and an environment read on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.components = components
    app.state.tracer = tracer
    install_handlers(app)
    app.openapi = lambda: document_errors(app)  # type: ignore[method-assign]
    for router in ROUTERS:
        app.include_router(router)
    app.mount(STATIC_PREFIX, console_static, name="console-static")
    app.state.fast_path = fast_path = FastPath()
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_bytes,
        fast_path=fast_path,
        blocklist=blocked,
        blocked_message=BLOCKED_MESSAGE,
    )
    if tracer is not None:
        app.add_middleware(tracer.middleware)  # outermost: the access log line is written inside the server span
    return app
