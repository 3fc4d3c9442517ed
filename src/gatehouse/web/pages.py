"""The page registry: `@page(...)` declares a console page (path, title, the least role that may open it, where it
sits in the navigation, its template) over a loader that reads what the page shows through the API as the viewer.

A page's role is the role of the API it reads, so the navigation, the page and the API agree; a change made on a
page is the browser calling the API itself (session cookie + CSRF), refused or allowed exactly as the API says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from gatehouse.auth.access import SESSION_COOKIE, Authenticator, check_status, public
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role
from gatehouse.core.components import components_of
from gatehouse.errors import GatehouseError
from gatehouse.web import api
from gatehouse.web.feedkinds import feed_kinds
from gatehouse.web.render import render

# The navigation's sections, in order.
SECTIONS = ("You", "Operate", "Govern", "Data")

# Every console route is public to the API's access check: a page checks its viewer's session and role itself.
router = APIRouter(include_in_schema=False, dependencies=[public()])


@dataclass
class View:
    """What a page loader gets: the request, the viewer, and reads through the API as the viewer."""

    request: Request
    principal: Principal
    notices: list[str] = field(default_factory=list)

    @property
    def path_params(self) -> Mapping[str, Any]:
        return self.request.path_params

    def id(self, name: str) -> int:
        """A numeric path parameter (`/console/users/{user_id}`); anything else is the page's 404, not a 500."""
        value = str(self.path_params.get(name, ""))
        if not value.isascii() or not value.isdigit() or len(value) > 18:
            raise api.ApiError(404, {"error": {"message": f"No such page: {name} must be a number."}})
        return int(value)

    def query(self, *names: str) -> dict[str, str]:
        """The page's own query parameters with these names (passed on to the API as they are)."""
        params = self.request.query_params
        return {name: params[name] for name in names if params.get(name)}

    def can(self, role: Role) -> bool:
        """Whether the viewer's role includes `role` (to show or hide a control; the API decides anyway)."""
        return self.principal.role.at_least(role)

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET the API as the viewer; an error ends the page with the API's own message."""
        return await api.get(self.request, path, params)

    async def optional(self, path: str, params: Mapping[str, Any] | None = None, default: Any = None) -> Any:
        """GET the API as the viewer; on an error, `default` and a notice on the page saying what failed."""
        try:
            return await api.get(self.request, path, params)
        except api.ApiError as exc:
            self.notices.append(f"{path}: {exc.message}")
            return default


Loader = Callable[[View], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Page:
    """One console page."""

    path: str
    title: str
    role: Role
    section: str
    template: str
    nav: bool
    live: tuple[str, ...]  # event kinds (or prefixes ending in ".") the page updates itself on


PAGES: list[Page] = []


def page(
    path: str,
    *,
    title: str,
    role: Role,
    template: str,
    section: str = "Operate",
    nav: bool = True,
    live: tuple[str, ...] = (),
) -> Callable[[Loader], Loader]:
    """Declare a page: its route is added to the console's router, its entry to the navigation."""
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}: one of {SECTIONS}")
    declared = Page(path, title, role, section, template, nav, live)
    PAGES.append(declared)

    def register(loader: Loader) -> Loader:
        async def endpoint(request: Request) -> Response:
            return await show(request, declared, loader)

        endpoint.__name__ = f"page_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}"
        router.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
        return loader

    return register


async def viewer(request: Request) -> Principal | None:
    """The signed-in viewer, or None (no session, an ended one, or an account that may not act now)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        principal = await components_of(request).get(Authenticator).for_session(request, token)
        check_status(principal)
    except GatehouseError:
        return None
    return principal


def sign_in_redirect(request: Request) -> RedirectResponse:
    """To the sign-in page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/?next={quote(target, safe='')}", status_code=303)


def navigation(principal: Principal) -> list[tuple[str, list[Page]]]:
    """The pages this viewer may open, by section."""
    sections: list[tuple[str, list[Page]]] = []
    for section in SECTIONS:
        entries = [p for p in PAGES if p.nav and p.section == section and principal.role.at_least(p.role)]
        if entries:
            sections.append((section, entries))
    return sections


def base_context(request: Request, principal: Principal, current: Page | None) -> dict[str, Any]:
    """What every page's layout needs."""
    return {
        "principal": principal,
        "nav": navigation(principal),
        "current": current,
        "live_feed": principal.role.at_least(Role.MONITOR),
        "feed_kinds": feed_kinds(),
        "Role": Role,
    }


async def show(request: Request, declared: Page, loader: Loader) -> Response:
    """Render a page for its viewer: sign-in when there is none, a plain refusal when their role is too low, the
    API's own message when a read fails."""
    principal = await viewer(request)
    if principal is None:
        return sign_in_redirect(request)
    context = base_context(request, principal, declared)
    if not principal.role.at_least(declared.role):
        context.update(
            status=403, message=f"This page needs the {declared.role.value} role; you are a {principal.role.value}."
        )
        return render(request, "error.html", context, status=403)
    view = View(request, principal)
    try:
        data = await loader(view)
    except api.ApiError as exc:
        status = exc.status if 400 <= exc.status < 500 else 502
        context.update(status=exc.status, message=exc.message)
        return render(request, "error.html", context, status=status)
    context.update(data)
    context["notices"] = view.notices
    context["view"] = view
    return render(request, declared.template, context)
