"""Liveness and readiness: /healthz (process alive) and /readyz (database answers, migrations at head)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import JSONResponse

from gatehouse.auth.access import public
from gatehouse.core.logging import get_logger
from gatehouse.db.migrate import current_revisions
from gatehouse.deps import RuntimeDep

log = get_logger("gatehouse.health")
router = APIRouter(tags=["health"])
READY_TIMEOUT = 2.0


@router.get("/healthz", dependencies=[public()])
async def healthz() -> dict[str, str]:
    """The process is alive; checks no dependency (for liveness probes)."""
    return {"status": "ok"}


@router.get("/readyz", dependencies=[public()], responses={503: {"description": "A check failed"}})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 when the database answers and its schema is at the code's migration head; else 503 naming the check."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            # Read-only: on SQLite a probe must not queue behind a writer for the write lock.
            async with runtime.db.read_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
            current = await current_revisions(runtime.db.read_engine)
    except Exception as exc:
        # This route is public: the driver's text (hosts, users, paths) goes to the log, not to the caller.
        log.error("readiness_database_failed", error=f"{type(exc).__name__}: {exc}")
        checks["database"] = f"database unreachable: {type(exc).__name__}; see the server log"
        return JSONResponse({"status": "unavailable", "failed": "database", "checks": checks}, status_code=503)
    if set(current) != set(runtime.db.head_revisions):
        checks["migrations"] = (
            f"database at {', '.join(current) or 'no revision'}, code expects "
            f"{', '.join(runtime.db.head_revisions)}: run `gatehouse db upgrade`"
        )
        return JSONResponse({"status": "unavailable", "failed": "migrations", "checks": checks}, status_code=503)
    checks["migrations"] = "ok"
    return JSONResponse({"status": "ready", "checks": checks})
