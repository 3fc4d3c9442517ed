"""The application factory: settings in, an ASGI app out. Mounts one router per domain, the error handlers and
the middleware; the lifespan is runtime.py's `running`, which builds everything and tears it down in order."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gatehouse import __version__
from gatehouse.accounts.admin_routes import router as admin_users_router
from gatehouse.accounts.invite_routes import router as invite_router
from gatehouse.accounts.key_routes import router as keys_router
from gatehouse.accounts.routes import router as accounts_router
from gatehouse.audit.routes import router as audit_router
from gatehouse.core.components import Components
from gatehouse.core.logging import configure_logging
from gatehouse.core.middleware import RequestContextMiddleware
from gatehouse.errors import install_handlers
from gatehouse.exports.erasure_routes import router as erasure_router
from gatehouse.exports.routes import router as export_router
from gatehouse.gateway.fastpath import FastPath
from gatehouse.gateway.routes import router as gateway_router
from gatehouse.gateway.streams.routes import router as streams_router
from gatehouse.jobs.routes import router as jobs_router
from gatehouse.limits.routes import router as limits_router
from gatehouse.monitoring.feed_routes import router as events_router
from gatehouse.monitoring.health import router as health_router
from gatehouse.monitoring.metrics_routes import router as metrics_router
from gatehouse.monitoring.snapshot_routes import router as snapshot_router
from gatehouse.runtime import PREPARED_ENV, announce, check_settings, prepare, running
from gatehouse.settings import Settings, get_settings
from gatehouse.upstreams.routes import router as upstreams_router


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app for these settings (default: from the environment)."""
    settings = settings or get_settings()
    configure_logging(settings)
    check_settings(settings)
    components = Components()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if os.environ.get(PREPARED_ENV) != "1":
            announce(await prepare(settings))
        async with running(settings, components) as runtime:
            app.state.runtime = runtime
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
    install_handlers(app)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(accounts_router)
    app.include_router(invite_router)
    app.include_router(admin_users_router)
    app.include_router(keys_router)
    app.include_router(audit_router)
    app.include_router(streams_router)
    app.include_router(events_router)
    app.include_router(snapshot_router)
    app.include_router(upstreams_router)
    app.include_router(gateway_router)
    app.include_router(limits_router)
    app.include_router(export_router)
    app.include_router(erasure_router)
    app.include_router(jobs_router)
    app.state.fast_path = fast_path = FastPath()
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_request_bytes, fast_path=fast_path)
    return app
