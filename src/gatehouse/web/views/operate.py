"""Console pages: operate (monitor and up): the dashboard, upstreams, live streams and health. Each reads the API as
its viewer; a change is the browser calling the API (see web/pages.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gatehouse.auth.roles import Role
from gatehouse.web.pages import View, page

# The dashboard's tiles: refusals, errors and percentiles over the last hour; requests per minute over 5 minutes.
TILE_MINUTES = 60
RATE_MINUTES = 5
DAY_CHOICES = (1, 7, 30, 90)
DEFAULT_DAYS = 30
KINDS = ("openai", "ollama", "anthropic")
OVERRIDES = ("down", "drain", "up")


def _days(view: View) -> int:
    """The charts' window from `?days=` (1-90), else 30."""
    raw = view.request.query_params.get("days", "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 90 else DEFAULT_DAYS


def _age(started_at: str, now: datetime) -> float:
    """Seconds since an ISO time."""
    return max(0.0, (now - datetime.fromisoformat(started_at)).total_seconds())


@page(
    "/console/dashboard",
    title="Dashboard",
    role=Role.MONITOR,
    section="Operate",
    template="pages/dashboard.html",
    live=("stream.", "upstream.", "quota.", "rate_limit."),
)
async def dashboard(view: View) -> Mapping[str, Any]:
    """Live tiles (traffic of the last hour, streams in flight, upstream states) and charts over 1-90 days."""
    days = _days(view)
    recent = await view.get("/admin/metrics", {"minutes": RATE_MINUTES})
    hour = await view.get("/admin/metrics", {"minutes": TILE_MINUTES})
    streams = await view.optional("/admin/streams", default={"items": [], "complete": False})
    upstreams = await view.optional("/admin/upstreams", default=[])
    series = await view.get("/admin/metrics/series", {"days": days, "bucket": "hour" if days == 1 else "day"})
    points = series["points"]

    def chart(field: str) -> list[tuple[str, float]]:
        return [(p["bucket"], float(p[field])) for p in points]

    usable = sum(1 for u in upstreams if u["state"] in ("up", "degraded"))
    return {
        "days": days,
        "day_choices": DAY_CHOICES,
        "rpm": recent["totals"]["requests"] / RATE_MINUTES,
        "rate_minutes": RATE_MINUTES,
        "tile_minutes": TILE_MINUTES,
        "hour": hour["totals"],
        "in_flight": len(streams["items"]),
        "streams_complete": streams["complete"],
        "upstreams": upstreams,
        "usable_upstreams": usable,
        "series": series,
        "requests_chart": chart("requests"),
        "errors_chart": chart("errors"),
        "tokens_chart": [(p["bucket"], float(p["tokens_in"] + p["tokens_out"])) for p in points],
        "cost_chart": chart("cost"),
        "totals": {
            "requests": sum(p["requests"] for p in points),
            "tokens": sum(p["tokens_in"] + p["tokens_out"] for p in points),
            "cost": sum(float(p["cost"]) for p in points),
        },
    }


@page(
    "/console/upstreams",
    title="Upstreams",
    role=Role.MONITOR,
    section="Operate",
    template="pages/upstreams.html",
    live=("upstream.",),
)
async def upstreams(view: View) -> Mapping[str, Any]:
    """Every upstream with this replica's view of its health; overrides and provisioning for admins."""
    return {
        "upstreams": await view.get("/admin/upstreams"),
        "can_change": view.can(Role.ADMIN),
        "kinds": KINDS,
        "overrides": OVERRIDES,
    }


@page(
    "/console/streams",
    title="Live streams",
    role=Role.MONITOR,
    section="Operate",
    template="pages/streams.html",
    live=("stream.",),
)
async def streams(view: View) -> Mapping[str, Any]:
    """Every in-flight request on every replica, with its age and tokens so far; terminate with a reason."""
    listed = await view.get("/admin/streams")
    now = datetime.now(UTC)
    items = [{**item, "age": _duration(_age(item["started_at"], now))} for item in listed["items"]]
    return {"streams": items, "complete": listed["complete"], "can_terminate": view.can(Role.MONITOR)}


def _duration(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `4m 10s`, `12s`."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@page(
    "/console/health",
    title="Health",
    role=Role.MONITOR,
    section="Operate",
    template="pages/health.html",
    live=("upstream.", "redis."),
)
async def health(view: View) -> Mapping[str, Any]:
    """What /admin/health says, readable."""
    report = await view.get("/admin/health")
    return {"health": report, "uptime": _duration(report["uptime_seconds"])}
