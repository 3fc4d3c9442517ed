"""The console's own routes: `/` (sign-in for a browser; what Ollama answers for anything else), `/signup` (the
link an invite hands out), `/console` (home), every declared page, and the static assets."""

from __future__ import annotations

from fastapi import Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import Scope

from gatehouse.auth.passwords import MIN_PASSWORD_LENGTH
from gatehouse.auth.roles import Role
from gatehouse.gateway.routes import OLLAMA_IS_RUNNING

# Each area's pages register themselves on import.
from gatehouse.web import (
    pages,
    views,  # noqa: F401
)
from gatehouse.web.pages import router, viewer
from gatehouse.web.render import STATIC, STATIC_PREFIX, render


def wants_html(request: Request) -> bool:
    """A browser navigating here (it asks for HTML); Ollama's clients and probes do not."""
    return "text/html" in request.headers.get("accept", "")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"


@router.api_route("/", methods=["GET", "HEAD"], tags=["ollama"], include_in_schema=True)
async def root(request: Request) -> Response:
    """What Ollama answers at its root (`Ollama is running`: clients and front-ends check it to detect an Ollama
    server); a browser asking for HTML gets the console's sign-in page instead (the console when signed in)."""
    if not wants_html(request):
        return PlainTextResponse(OLLAMA_IS_RUNNING)
    target = safe_next(request.query_params.get("next"))
    if await viewer(request) is not None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", {"next": target, "principal": None})


@router.get("/signup", include_in_schema=False)
async def signup(request: Request) -> Response:
    """The page an invite link opens: choose an email (unless the invite names one) and a password."""
    context = {"invite": request.query_params.get("invite", ""), "principal": None, "min_password": MIN_PASSWORD_LENGTH}
    return render(request, "signup.html", context)


@router.get("/console", include_in_schema=False)
async def home(request: Request) -> Response:
    """Monitors and above start at the dashboard, users at their usage."""
    principal = await viewer(request)
    if principal is None:
        return pages.sign_in_redirect(request)
    return RedirectResponse(
        "/console/dashboard" if principal.role.at_least(Role.MONITOR) else "/console/usage", status_code=303
    )


class _Static(StaticFiles):
    """Static assets: versioned URLs (`?v=<digest>`), so they may be cached for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["cache-control"] = "public, max-age=31536000, immutable"
            response.headers["x-content-type-options"] = "nosniff"
        return response


static = _Static(directory=STATIC)
__all__ = ["STATIC_PREFIX", "router", "static"]
