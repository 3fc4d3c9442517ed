"""GET /metrics: Prometheus' text format, for a monitor (or higher) or a scraper holding METRICS_TOKEN."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.metrics import scrape

router = APIRouter(tags=["ops"])


@router.get(
    "/metrics",
    dependencies=[require(Role.MONITOR, bearer_setting="metrics_token")],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics() -> Response:
    """Every metric of this process, or of all workers under `gatehouse serve --workers N`."""
    # Off the loop: in multiprocess mode a scrape reads every worker's files.
    return Response(await asyncio.to_thread(scrape), media_type=CONTENT_TYPE_LATEST)
