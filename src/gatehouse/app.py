"""The application factory: settings in, an ASGI app out. Mounts one router per domain, the error handlers and
the middleware; the lifespan is runtime.py's `running`, which builds everything and tears it down in order."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gatehouse import __version__
from gatehouse.accounts.routes import router as accounts
from gatehouse.alerts.routes import router as alerts
from gatehouse.audit.routes import router as audit
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
from gatehouse.errors import install_handlers
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
