"""The permission walk: every console page opened by every role in a real browser, generated from the page
registry and the API's own access declarations, so a new page or route is walked without editing this file.

For each role and page: the navigation lists exactly the pages the role may open; a page above the role answers
a plain 403 page; a page the role may open renders, and every change it offers (each `form[data-api]`) is a call
the API allows that role; no page carries inline script, inline style or event-handler attributes (the CSP would
block them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from playwright.sync_api import Page

from gatehouse.app import create_app
from gatehouse.auth.roles import Role
from gatehouse.web.pages import PAGES
from tests.conftest import make_settings
from tests.e2e.console.conftest import Console, Person
from tests.integration.test_permissions import declarations_of, route_contexts

ROLES = [Role.USER, Role.MONITOR, Role.ADMIN, Role.SUPERADMIN]


@dataclass(frozen=True)
class ApiRoute:
    method: str
    pattern: re.Pattern[str]
    role: Role | None  # None: public
    path: str


def api_routes(tmp_path: Path) -> list[ApiRoute]:
    """Every API route with the role its one access declaration asks for."""
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path}/walk.db", tmp_path))
    found = []
    for context in route_contexts(app):
        if not isinstance(getattr(context, "original_route", context), APIRoute):
            continue
        access = declarations_of(context)
        if len(access) != 1:
            continue
        template = re.sub(r"\\\{[^}:]+\\\}", "[^/]+", re.escape(context.path))
        template = re.sub(r"\\\{[^}:]+:path\\\}", ".+", template)
        for method in context.methods or ():
            found.append(ApiRoute(method, re.compile(f"^{template}$"), access[0].role, context.path))
    return found


def route_for(routes: list[ApiRoute], method: str, path: str) -> ApiRoute:
    bare = path.split("?", 1)[0]
    # A placeholder the form fills in ({user_id}) stands for any one segment.
    concrete = re.sub(r"\{[^}]+\}", "1", bare)
    matches = [r for r in routes if r.method == method and r.pattern.match(concrete)]
    assert matches, f"the page offers {method} {path}, which is no API route"
    # The most specific route (the longest template) is the one the router picks first for literal segments.
    return max(matches, key=lambda r: len(r.path.replace("{", "").replace("}", "")))


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[ApiRoute]:
    return api_routes(tmp_path_factory.mktemp("walk"))


def concrete_path(path: str, console: Console, person: Person) -> str:
    """A page path with its parameters filled by objects that exist."""
    if "{group_id}" in path:
        with console.admin() as admin:
            made = admin.post("/admin/groups", json={"name": f"walk-{person.id}-{path.count('/')}"})
            assert made.status_code == 201, made.text
            path = path.replace("{group_id}", str(made.json()["id"]))
    path = path.replace("{user_id}", str(person.id))
    assert "{" not in path, f"the walk cannot fill {path}: teach concrete_path how"
    return path


@pytest.mark.parametrize("role", ROLES, ids=[r.value for r in ROLES])
def test_every_role_on_every_page(
    role: Role, console: Console, page_for: Callable[..., tuple[Page, Person]], routes: list[ApiRoute]
) -> None:
    page, _viewer = page_for(role.value)
    target = console.person("user")  # someone to look at on pages about one user
    assert PAGES, "no console page is registered"
    allowed = {p.path for p in PAGES if p.nav and role.at_least(p.role)}
    page.goto(console.url + "/console/profile")
    listed = set(page.locator("nav.side a").evaluate_all("links => links.map(a => a.getAttribute('href'))"))
    assert listed == allowed, (
        f"{role.value}: the navigation lists {sorted(listed)}, the role may open {sorted(allowed)}"
    )
    for declared in PAGES:
        path = concrete_path(declared.path, console, target)
        response = page.goto(console.url + path)
        assert response is not None
        if not role.at_least(declared.role):
            assert response.status == 403, f"{role.value} opened {path}"
            assert f"needs the {declared.role.value} role" in page.locator("[data-error-status]").inner_text()
            continue
        assert response.status == 200, f"{role.value} on {path}: {response.status} {page.content()[:600]}"
        assert page.locator("h1").first.inner_text().strip(), path
        html = page.content()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{path}: an inline script"
        assert not re.search(r"\sstyle=\"", html), f"{path}: an inline style attribute"
        assert not re.search(r"\son[a-z]+=\"", html), f"{path}: an inline event handler"
        if "{" in declared.path:
            # A path parameter that is not an id is the page's own 404, never a server error.
            wrong = page.goto(console.url + re.sub(r"\{[^}]+\}", "not-a-number", declared.path))
            assert wrong is not None and wrong.status == 404, f"{role.value} on {declared.path} with a bad id"
        offered = page.locator("form[data-api]").evaluate_all(
            "forms => forms.map(f => [(f.dataset.method || 'POST').toUpperCase(), f.dataset.api])"
        )
        for method, api_path in offered:
            needed = route_for(routes, method, api_path).role
            assert needed is None or role.at_least(needed), (
                f"{path} offers a {role.value} {method} {api_path}, which the API keeps for {needed.value}"
            )
