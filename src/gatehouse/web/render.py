"""Rendering a console page: the Jinja2 environment (autoescaped), its filters, and the security headers every
page carries (a strict Content-Security-Policy: scripts and styles only from Gatehouse itself, no inline code)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from gatehouse import __version__

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_PREFIX = "/console/static"

# No inline script or style anywhere (bars are <meter>, charts are SVG attributes); nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; manifest-src 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


@cache
def asset_version(name: str) -> str:
    """A short digest of a static file, appended to its URL so browsers may cache it for good."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """The URL of a static asset, versioned by its content."""
    return f"{STATIC_PREFIX}/{name}?v={asset_version(name)}"


def when(value: Any, default: str = "—") -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS UTC` (the page's script shows it in the viewer's zone too)."""
    if value in (None, ""):
        return default
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if not isinstance(value, datetime) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: Any, default: str = "—") -> str:
    """A number with thousands separators; `default` for none."""
    if value is None:
        return default
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def percent(value: Any, default: str = "—") -> str:
    """A percentage as given by the API (0-100), or a fraction (0-1) with `fraction=True` callers."""
    if value is None:
        return default
    return f"{float(value):.0f}%" if float(value) >= 10 else f"{float(value):.1f}%"


def size(value: Any) -> str:
    """Bytes, readable."""
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1024 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TB"


def millis(value: Any) -> str:
    """Milliseconds, readable."""
    if value is None:
        return "—"
    amount = float(value)
    return f"{amount:.0f} ms" if amount < 10_000 else f"{amount / 1000:.1f} s"


def to_json(value: Any) -> str:
    """Pretty JSON, for details shown as they are."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@cache
def environment() -> Environment:
    """The console's templates, autoescaped."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals.update(static_url=static_url, version=__version__)
    env.filters.update(when=when, number=number, percent=percent, size=size, millis=millis, to_json=to_json)
    return env


def render(request: Request, template: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
    """A page, with the security headers."""
    html = environment().get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
