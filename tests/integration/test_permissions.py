"""The route x role matrix: every route declares its access once, and the declaration is what is enforced.

Data-driven from the app's own routes, so a new route is covered (or fails, when undeclared) without
anyone editing this file.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from gatehouse.app import create_app
from gatehouse.auth import passwords
from gatehouse.auth.access import Access, public, require
from gatehouse.auth.roles import Role
from gatehouse.deps import PrincipalDep
from tests.conftest import Harness, make_settings

MISSING_ID = "999999"  # fills every path parameter: nothing is found, so no call changes anything
REQUEST_TIMEOUT = 15  # seconds; the in-process transport buffers whole answers, so an endless stream would hang
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Endless answers (server-sent events), asked to end: the in-process transport waits for a whole response.
BOUNDED_QUERIES = {"/admin/events": {"follow": "false"}}
ANONYMOUS = "anonymous"
DISABLED = "disabled"
BLOCKED = "blocked"


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps bootstrap at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@dataclass(frozen=True)
class Endpoint:
    """One method of one route, with its access declarations."""

    method: str
    path: str
    declarations: tuple[Access, ...]

    @property
    def access(self) -> Access:
        assert len(self.declarations) == 1, self
        return self.declarations[0]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def route_contexts(app: FastAPI) -> Iterator[Any]:
    """Every route as served, with the dependencies of the routers that include it merged in."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # older FastAPI: included routes are copied into app.routes
        yield from app.routes
    else:
        yield from contexts(app.routes)


def declarations_of(route: Any) -> tuple[Access, ...]:
    """The Access declarations a route depends on directly (route, router or parameter level)."""
    return tuple(dependant.call for dependant in route.dependant.dependencies if isinstance(dependant.call, Access))


def framework_paths(app: FastAPI) -> set[str]:
    """FastAPI's own documentation routes: public by design, and not APIRoutes."""
    return {p for p in (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p}


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every (method, path) the app serves through an APIRoute or a websocket route."""
    found = []
    for context in route_contexts(app):
        original = getattr(context, "original_route", context)
        if isinstance(original, APIRoute):
            for method in sorted(context.methods):
                found.append(Endpoint(method, context.path, declarations_of(context)))
        elif isinstance(original, APIWebSocketRoute):
            found.append(Endpoint("WEBSOCKET", context.path, declarations_of(context)))
    return found


def access_problems(app: FastAPI) -> list[str]:
    """Routes without exactly one access declaration, and routes that cannot carry one; empty when all is well."""
    problems = []
    for endpoint in endpoints(app):
        if len(endpoint.declarations) != 1:
            problems.append(
                f"{endpoint}: {len(endpoint.declarations)} access declarations, expected exactly one "
                "(dependencies=[require(Role.X)] or [public()])"
            )
    for context in route_contexts(app):
        original = getattr(context, "original_route", context)
        if isinstance(original, APIRoute | APIWebSocketRoute):
            continue
        path = getattr(context, "path", None)
        if path in framework_paths(app):
            continue
        if isinstance(original, Mount) and isinstance(original.app, StaticFiles):
            continue
        problems.append(
            f"{type(original).__name__} {path}: not a FastAPI route, so it cannot declare its access; "
            "add it with an APIRouter and require()/public()"
        )
    return problems


# --- the guard -------------------------------------------------------------------------------------


def test_every_route_declares_its_access_once(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path}/unused.db", tmp_path))
    assert access_problems(app) == []
    found = endpoints(app)
    paths = {e.path for e in found}
    # The walk sees routes inside included routers (a walk that saw none would pass vacuously).
    assert {"/healthz", "/auth/login", "/me", "/admin/users", "/v1/chat/completions", "/api/tags"} <= paths


def test_the_guard_reports_undeclared_and_doubly_declared_routes(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path}/unused.db", tmp_path))

    @app.get("/undeclared")
    async def undeclared() -> dict[str, str]:
        return {}

    @app.post("/twice", dependencies=[require(Role.USER), public()])
    async def twice() -> dict[str, str]:
        return {}

    router = fastapi.APIRouter()

    @router.get("/nested/undeclared")
    async def nested() -> dict[str, str]:
        return {}

    app.include_router(router, prefix="/extra")

    async def plain(request: Any) -> None:
        return None

    app.add_route("/plain-starlette", plain)

    problems = access_problems(app)
    assert any(p.startswith("GET /undeclared: 0 access declarations") for p in problems), problems
    assert any(p.startswith("POST /twice: 2 access declarations") for p in problems), problems
    assert any(p.startswith("GET /extra/nested/undeclared: 0") for p in problems), problems
    assert any("/plain-starlette" in p and "not a FastAPI route" in p for p in problems), problems
    assert len(problems) == 4, problems

    # A declaration on the including router counts for every route in it.
    declared = fastapi.APIRouter()

    @declared.get("/inherited")
    async def inherited() -> dict[str, str]:
        return {}

    app2 = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path}/unused.db", tmp_path))
    app2.include_router(declared, prefix="/r", dependencies=[require(Role.ADMIN)])
    assert access_problems(app2) == []
    inherited_endpoint = next(e for e in endpoints(app2) if e.path == "/r/inherited")
    assert inherited_endpoint.access.role is Role.ADMIN


# --- the matrix ------------------------------------------------------------------------------------


async def _member(harness: Harness, role: Role, email: str) -> tuple[int, str]:
    created = await harness.client.post("/admin/users", json={"email": email, "role": role.value})
    assert created.status_code == 201, created.text
    user_id: int = created.json()["id"]
    key = await harness.client.post(f"/admin/users/{user_id}/keys", json={"name": "matrix"})
    assert key.status_code == 201, key.text
    return user_id, key.json()["key"]


async def _callers(harness: Harness) -> dict[str, str | None]:
    """caller name -> API key (None: no credentials)."""
    keys: dict[str, str | None] = {ANONYMOUS: None}
    for role in Role:
        _, keys[role.value] = await _member(harness, role, f"matrix-{role.value}@example.com")
    # A disabled superadmin: being disabled outranks any role.
    disabled_id, disabled_key = await _member(harness, Role.SUPERADMIN, "matrix-disabled@example.com")
    keys[DISABLED] = disabled_key
    assert (await harness.client.get("/me", headers=harness.as_key(disabled_key))).status_code == 200  # now cached
    assert (await harness.client.post(f"/admin/users/{disabled_id}/disable")).status_code == 200
    # A blocked admin (a second superadmin stays active, so blocking is allowed): blocked outranks any role.
    blocked_id, blocked_key = await _member(harness, Role.ADMIN, "matrix-blocked@example.com")
    keys[BLOCKED] = blocked_key
    assert (await harness.client.get("/me", headers=harness.as_key(blocked_key))).status_code == 200  # now cached
    assert (await harness.client.post(f"/admin/users/{blocked_id}/block", json={"reason": "matrix"})).status_code == 200
    return keys


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", MISSING_ID, path)


def _code(response: httpx.Response) -> str | None:
    """The error code (OpenAI shape), or None for Ollama's plain-string errors and non-errors."""
    try:
        error = response.json().get("error")
    except ValueError:
        return None
    return error.get("code") if isinstance(error, dict) else None


def _expected(access: Access, caller: str) -> tuple[str, int | None, str | None]:
    """(verdict, status, code): 'denied' with a status and code, or 'allowed' (anything but 401/403/500)."""
    if access.role is None:
        return "allowed", None, None
    if caller == ANONYMOUS:
        return "denied", 401, "missing_api_key"
    if caller == DISABLED:  # a superadmin, disabled: the status check comes before the role check
        return "denied", 403, "account_disabled"
    if caller == BLOCKED:  # an admin, blocked: the block check comes before the role check
        return "denied", 403, "account_blocked"
    if Role(caller).at_least(access.role):
        return "allowed", None, None
    return "denied", 403, "forbidden"


async def matrix_failures(harness: Harness, keys: dict[str, str | None], paths: set[str] | None = None) -> list[str]:
    """Call every endpoint (or those at `paths`) as every caller; describe each answer the declaration forbids."""
    failures = []
    # Its own client: no default Authorization header (unlike harness.client), and a crash comes back as a 500.
    transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as client:
        for endpoint in endpoints(harness.app):
            if endpoint.method == "WEBSOCKET" or (paths is not None and endpoint.path not in paths):
                continue  # httpx cannot open websockets; their declaration is checked by the guard
            for caller, key in keys.items():
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        response = await client.request(
                            endpoint.method,
                            _concrete(endpoint.path),
                            headers=harness.as_key(key),
                            params=BOUNDED_QUERIES.get(endpoint.path),
                            json={} if endpoint.method in BODY_METHODS else None,
                        )
                except TimeoutError:
                    failures.append(f"{endpoint} as {caller}: no complete answer in {REQUEST_TIMEOUT} s (a stream?)")
                    continue
                verdict, status, code = _expected(endpoint.access, caller)
                if verdict == "allowed":
                    ok = response.status_code not in (401, 403, 500)  # any other answer; a 500 is a bug anyway
                elif endpoint.path.startswith("/api/"):  # Ollama's shape: {"error": "<message>"}
                    ok = response.status_code == status and isinstance(response.json().get("error"), str)
                else:
                    ok = response.status_code == status and _code(response) == code
                if not ok:
                    failures.append(
                        f"{endpoint} as {caller}: expected {verdict} {status or ''} {code or ''}".rstrip()
                        + f", got {response.status_code} {response.text[:200]}"
                    )
    return failures


async def test_route_role_matrix(harness: Harness) -> None:
    keys = await _callers(harness)
    assert len(endpoints(harness.app)) >= 20
    failures = await matrix_failures(harness, keys)
    assert not failures, "\n".join(failures)

    # The matrix notices a route whose behaviour contradicts its declaration.
    @harness.app.get("/probe/claims-public", dependencies=[public()])
    async def claims_public(principal: PrincipalDep) -> dict[str, int]:
        return {"user_id": principal.user_id}

    failures = await matrix_failures(harness, keys, paths={"/probe/claims-public"})
    assert [f.split(":")[0] for f in failures] == [
        "GET /probe/claims-public as anonymous",
        "GET /probe/claims-public as disabled",
        "GET /probe/claims-public as blocked",
    ], failures
    assert "got 401" in failures[0]
    assert "got 403" in failures[1]
    assert "got 403" in failures[2]
