"""Authorisation fuzzing, generated from the app's routes: whose object a caller may reach, and who may change it.

Every route is walked (test_permissions' `endpoints()`): each path parameter is filled by a factory named after the
parameter and the collection before it (`/admin/keys/{key_id}` -> ("keys", "key_id")). A factory makes a fresh
object for an owner, or says the parameter names nobody's object. Then, on SQLite and PostgreSQL:

- a user reaching another user's object (keys, stored responses...) gets 404, as for an unknown id, and the owner's
  same call still works (so the object was real and is untouched);
- a monitor's call to an admin's change is refused, and a monitor's change to an admin's object too;
- an admin's change to a superadmin's object (the superadmin themselves, their keys, limits, memberships, rules,
  invites to become one, streams) is refused with 403 `role_not_allowed`, while a superadmin's same call works;
- a change made with the console's session cookie but without its CSRF token is refused (403 `csrf_failed`), and
  the same call with the token gets past authentication.

A new route whose path parameter has no factory fails `test_every_path_parameter_has_a_factory`, which tells its
author to add one: that is how new routes are covered.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from gatehouse.app import create_app
from gatehouse.auth import passwords
from gatehouse.auth.access import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from gatehouse.auth.roles import Role
from gatehouse.gateway.streams.registry import StreamRegistry
from gatehouse.upstreams.providers import DEMO_MODEL
from tests.conftest import BACKENDS, Harness, fresh_database, make_settings, running_app
from tests.integration.test_permissions import MISSING_ID, Endpoint, endpoints
from tests.support.stored_responses import store

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
PASSWORD = "authz-fuzz-password-1"
_serial = itertools.count(1)

# The body each change is sent with, valid for the route, so that what answers is the authorisation and not the
# validation (a route missing here is sent `{}`; if that is refused as invalid, the test says to add a body).
BODIES: dict[str, Any] = {
    "PATCH /me/keys/{key_id}": {"rate_per_minute": 30},
    "PATCH /admin/users/{user_id}": {"display_name": "renamed"},
    "POST /admin/users/{user_id}/block": {"reason": "authz fuzz"},
    "POST /admin/users/{user_id}/keys": {"name": "authz"},
    "PATCH /admin/keys/{key_id}": {"rate_per_minute": 30},
    "PATCH /admin/users/{subject_id}/limits": {"messages_per_day": 5},
    "PATCH /admin/keys/{subject_id}/limits": {"messages_per_day": 5},
    "PATCH /admin/groups/{subject_id}/limits": {"messages_per_day": 5},
    "PATCH /admin/groups/{group_id}": {"description": "changed"},
    "POST /admin/streams/{stream_id}/terminate": {"reason": "authz fuzz"},
}


def body_of(endpoint: Endpoint) -> Any:
    """The body a change is sent with (None for reads)."""
    return BODIES.get(str(endpoint), {}) if endpoint.method in MUTATING else None


@dataclass(frozen=True)
class Person:
    """A user with one API key."""

    id: int
    role: Role
    email: str
    key: str
    key_id: int


@dataclass
class World:
    """The app (its lifespan running) with the callers every test uses; the bootstrap superadmin makes objects."""

    harness: Harness
    client: httpx.AsyncClient  # no default credentials; a crash comes back as a 500
    alice: Person
    bob: Person
    monitor: Person
    admin: Person
    superadmin: Person

    async def as_root(self, method: str, path: str, body: Any = None) -> Any:
        """A call by the bootstrap superadmin that must succeed; its JSON answer."""
        response = await self.harness.client.request(method, path, json=body)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    async def person(self, role: Role, *, password: str | None = None) -> Person:
        """A new user of `role`, with one key."""
        body: dict[str, Any] = {"email": f"authz-{role.value}-{next(_serial)}@example.com", "role": role.value}
        if password is not None:
            body["password"] = password
        user = await self.as_root("POST", "/admin/users", body)
        key = await self.as_root("POST", f"/admin/users/{user['id']}/keys", {"name": "authz"})
        return Person(user["id"], role, user["email"], key["key"], key["id"])

    async def call(self, caller: Person, endpoint: Endpoint, path: str) -> httpx.Response:
        """`endpoint` at the concrete `path`, as `caller`, with its body."""
        return await self.client.request(
            endpoint.method, path, headers={"authorization": f"Bearer {caller.key}"}, json=body_of(endpoint)
        )


# --- factories: one per (collection, parameter) -------------------------------------------------------------


@dataclass
class Filling:
    """What a factory knows: the world, whose object to make, and the parameters filled so far (left to right)."""

    world: World
    owner: Person
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Factory:
    """Makes the object a path parameter names. `owned`: the object is someone's (the owner's), so the
    cross-user and superadmin checks apply to routes that take it."""

    make: Callable[[Filling], Awaitable[str]]
    owned: bool


async def _the_user(f: Filling) -> str:
    return str(f.owner.id)


async def _a_member(f: Filling) -> str:
    # The group filled before it gets the owner as a member (so that removing them is a real change).
    await f.world.as_root("PUT", f"/admin/groups/{f.values['group_id']}/members/{f.owner.id}")
    return str(f.owner.id)


async def _a_key(f: Filling) -> str:
    key = await f.world.as_root("POST", f"/admin/users/{f.owner.id}/keys", {"name": f"authz-{next(_serial)}"})
    return str(key["id"])


async def _a_stored_response(f: Filling) -> str:
    response, _ = await store(f.world.harness, f.owner.id, "authz", key_id=f.owner.key_id)
    return str(response["id"])


async def _a_live_stream(f: Filling) -> str:
    # Registered in the app's own registry as the relay registers a request in flight (the in-process transport
    # cannot hold a real stream open while the test calls the terminate route).
    registry: StreamRegistry = f.world.harness.app.state.components.get(StreamRegistry)
    live = registry.open(
        user_id=f.owner.id,
        user_email=f.owner.email,
        key_id=f.owner.key_id,
        model=DEMO_MODEL,
        protocol="openai",
        stream=True,
    )
    return live.id


async def _an_invite(f: Filling) -> str:
    # An invite is the future account of its role: one to become a superadmin is a superadmin's matter.
    invite = await f.world.as_root("POST", "/admin/invites", {"role": f.owner.role.value})
    return str(invite["id"])


async def _an_access_rule(f: Filling) -> str:
    rule = {"user_id": f.owner.id, "effect": "allow", "pattern": f"authz-{next(_serial)}"}
    return str((await f.world.as_root("POST", "/admin/access/rules", rule))["id"])


async def _a_group(f: Filling) -> str:
    return str((await f.world.as_root("POST", "/admin/groups", {"name": f"authz-{next(_serial)}"}))["id"])


def _constant(value: str) -> Callable[[Filling], Awaitable[str]]:
    async def make(f: Filling) -> str:
        return value

    return make


FACTORIES: dict[tuple[str, str], Factory] = {
    ("users", "user_id"): Factory(_the_user, owned=True),
    ("users", "subject_id"): Factory(_the_user, owned=True),
    ("members", "user_id"): Factory(_a_member, owned=True),
    ("keys", "key_id"): Factory(_a_key, owned=True),
    ("keys", "subject_id"): Factory(_a_key, owned=True),
    ("responses", "response_id"): Factory(_a_stored_response, owned=True),
    ("streams", "stream_id"): Factory(_a_live_stream, owned=True),
    ("invites", "invite_id"): Factory(_an_invite, owned=True),
    ("rules", "rule_id"): Factory(_an_access_rule, owned=True),
    # Nobody's objects: the organisation's groups, upstreams, prices, models, jobs, backups and blocked networks.
    ("groups", "group_id"): Factory(_a_group, owned=False),
    ("groups", "subject_id"): Factory(_a_group, owned=False),
    ("upstreams", "upstream_id"): Factory(_constant(MISSING_ID), owned=False),
    ("models", "model"): Factory(_constant(DEMO_MODEL), owned=False),
    ("prices", "model"): Factory(_constant(DEMO_MODEL), owned=False),
    ("jobs", "name"): Factory(_constant("purge"), owned=False),
    ("backups", "name"): Factory(_constant("none.tar.gz"), owned=False),
    ("blocklist", "block_id"): Factory(_constant(MISSING_ID), owned=False),
}


def slots(path: str) -> list[tuple[str, str]]:
    """Each path parameter as (the collection before it, its name)."""
    segments = path.strip("/").split("/")
    found = []
    for i, segment in enumerate(segments):
        if match := PARAMETER.fullmatch(segment):
            found.append((segments[i - 1] if i else "", match.group(1)))
    return found


def factory_problems(app: FastAPI) -> list[str]:
    """Path parameters no factory fills; empty when all is well."""
    return [
        f"{endpoint}: no factory for {{{name}}} after /{collection}/: add one to FACTORIES in "
        f"tests/integration/test_authz_fuzz.py, saying whose object it is (owned=True for anything a user owns)"
        for endpoint in endpoints(app)
        for collection, name in slots(endpoint.path)
        if (collection, name) not in FACTORIES
    ]


def owns_something(endpoint: Endpoint) -> bool:
    """Whether a path parameter of this route names someone's object."""
    return any(FACTORIES[slot].owned for slot in slots(endpoint.path))


async def fill(world: World, endpoint: Endpoint, owner: Person) -> str:
    """The route's path with fresh objects of `owner` (and nobody's objects) in its parameters."""
    filling = Filling(world, owner)
    for slot in slots(endpoint.path):
        filling.values[slot[1]] = await FACTORIES[slot].make(filling)
    return PARAMETER.sub(lambda m: filling.values[m.group(1)], endpoint.path)


def error_code(response: httpx.Response) -> str | None:
    """The error code of an OpenAI-shaped (or Anthropic-shaped) error, if any."""
    try:
        error = response.json().get("error")
    except ValueError:
        return None
    return error.get("code") or error.get("type") if isinstance(error, dict) else None


def answer(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text[:300]}"


# --- the world, once per backend -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """The app on a fresh database (SQLite, PostgreSQL) with two users, a monitor, an admin and a superadmin (the
    bootstrap superadmin, a second one, stays out of the tests' way and makes their objects)."""
    directory = tmp_path_factory.mktemp(f"authz-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        # Still argon2id, at a cost that keeps creating users and logging in at a millisecond.
        patch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        with fresh_database(request.param, directory) as url:
            async with running_app(make_settings(url, directory)) as harness:
                transport = httpx.ASGITransport(app=harness.app, raise_app_exceptions=False)
                async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as client:
                    world = World(harness, client, *([None] * 5))  # type: ignore[arg-type]
                    # The bootstrap superadmin makes every test object: more keys and invites than an hour allows.
                    limits = {"limits": {"key_create": None, "invite_create": None}}
                    await world.as_root("PUT", "/admin/rate-limits", limits)
                    world.alice = await world.person(Role.USER)
                    world.bob = await world.person(Role.USER)
                    world.monitor = await world.person(Role.MONITOR)
                    world.admin = await world.person(Role.ADMIN)
                    world.superadmin = await world.person(Role.SUPERADMIN, password=PASSWORD)
                    yield world


# --- the guard: every path parameter has a factory -----------------------------------------------------------


def test_every_path_parameter_has_a_factory(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path}/unused.db", tmp_path))
    assert factory_problems(app) == []
    walked = {str(e) for e in endpoints(app) if owns_something(e)}
    # The walk sees the routes that take someone's object (a walk that saw none would pass vacuously).
    assert {"DELETE /me/keys/{key_id}", "GET /v1/responses/{response_id}", "DELETE /admin/users/{user_id}"} <= walked

    # A new route with a parameter nobody taught the test to fill is reported, naming what to do.
    @app.delete("/admin/widgets/{widget_id}")
    async def delete_widget(widget_id: int) -> None:
        return None

    problems = factory_problems(app)
    assert len(problems) == 1 and problems[0].startswith("DELETE /admin/widgets/{widget_id}: no factory"), problems
    assert "add one to FACTORIES" in problems[0]


# --- a user and another user's objects -----------------------------------------------------------------------


async def test_a_user_gets_404_for_another_users_objects(world: World) -> None:
    failures, checked = [], []
    for endpoint in endpoints(world.harness.app):
        if endpoint.access.role is not Role.USER or not owns_something(endpoint):
            continue
        path = await fill(world, endpoint, world.bob)
        intruder = await world.call(world.alice, endpoint, path)
        code = error_code(intruder)
        if intruder.status_code != 404 or not (code or "").endswith("not_found"):
            failures.append(f"{endpoint} as another user: expected 404 *_not_found, got {answer(intruder)}")
        owner = await world.call(world.bob, endpoint, path)  # the object was real, and is still there
        if owner.status_code >= 300:
            hint = " (add a valid body to BODIES)" if owner.status_code == 422 else ""
            failures.append(f"{endpoint} as its owner: expected success{hint}, got {answer(owner)}")
        checked.append(str(endpoint))
    assert not failures, "\n".join(failures)
    assert len(checked) >= 5, checked  # /me/keys (change, revoke) and /v1/responses (read, delete, input items)


async def test_a_user_cannot_continue_another_users_stored_response(world: World) -> None:
    """An object named in a body (previous_response_id) is hidden the same way as one in a path."""
    path = await fill(world, Endpoint("GET", "/v1/responses/{response_id}", ()), world.bob)
    theirs = path.rsplit("/", 1)[1]
    body = {"model": DEMO_MODEL, "input": "go on", "previous_response_id": theirs, "store": False}
    intruder = await world.client.post(
        "/v1/responses", json=body, headers={"authorization": f"Bearer {world.alice.key}"}
    )
    assert intruder.status_code == 404 and error_code(intruder) == "response_not_found", answer(intruder)
    owner = await world.client.post("/v1/responses", json=body, headers={"authorization": f"Bearer {world.bob.key}"})
    assert owner.status_code == 200, answer(owner)


# --- a monitor and an admin's changes ------------------------------------------------------------------------


async def test_a_monitor_cannot_make_an_admins_change(world: World) -> None:
    failures, checked = [], 0
    for endpoint in endpoints(world.harness.app):
        if endpoint.method not in MUTATING or endpoint.access.role not in (Role.ADMIN, Role.SUPERADMIN):
            continue
        path = await fill(world, endpoint, await world.person(Role.USER))
        response = await world.call(world.monitor, endpoint, path)
        if response.status_code != 403 or error_code(response) != "forbidden":
            failures.append(f"{endpoint} as a monitor: expected 403 forbidden, got {answer(response)}")
        checked += 1
    assert not failures, "\n".join(failures)
    assert checked >= 30, checked


async def test_a_monitor_cannot_change_an_admins_objects(world: World) -> None:
    """The changes a monitor may make (block, unblock, terminate a stream) reach only users ranked below them."""
    failures, checked = [], []
    for endpoint in endpoints(world.harness.app):
        if endpoint.method not in MUTATING or endpoint.access.role is not Role.MONITOR or not owns_something(endpoint):
            continue
        path = await fill(world, endpoint, await world.person(Role.ADMIN))
        refused = await world.call(world.monitor, endpoint, path)
        if refused.status_code != 403 or error_code(refused) != "role_not_allowed":
            failures.append(
                f"{endpoint} on an admin's, as a monitor: expected 403 role_not_allowed, got {answer(refused)}"
            )
        allowed = await world.call(world.superadmin, endpoint, path)
        if allowed.status_code >= 300:
            failures.append(f"{endpoint} on an admin's, as a superadmin: expected success, got {answer(allowed)}")
        checked.append(str(endpoint))
    assert not failures, "\n".join(failures)
    assert {"POST /admin/users/{user_id}/block", "POST /admin/streams/{stream_id}/terminate"} <= set(checked)


# --- an admin and a superadmin -------------------------------------------------------------------------------


async def test_an_admin_cannot_act_on_a_superadmin(world: World) -> None:
    failures, checked = [], []
    for endpoint in endpoints(world.harness.app):
        role = endpoint.access.role
        if endpoint.method not in MUTATING or role is None or role is Role.USER or not owns_something(endpoint):
            continue  # a user-level change acts on the caller's own objects (the cross-user test covers it)
        path = await fill(world, endpoint, await world.person(Role.SUPERADMIN))
        refused = await world.call(world.admin, endpoint, path)
        if refused.status_code != 403 or error_code(refused) != "role_not_allowed" or "superadmin" not in refused.text:
            failures.append(
                f"{endpoint} on a superadmin's, as an admin: expected 403 role_not_allowed, got {answer(refused)}"
            )
        allowed = await world.call(world.superadmin, endpoint, path)  # the same call is valid: only the role differs
        if allowed.status_code >= 300:
            hint = " (add a valid body to BODIES)" if allowed.status_code == 422 else ""
            failures.append(
                f"{endpoint} on a superadmin's, as a superadmin: expected success{hint}, got {answer(allowed)}"
            )
        checked.append(str(endpoint))
    assert not failures, "\n".join(failures)
    assert len(checked) >= 15, checked


async def test_an_admin_cannot_make_or_aim_at_a_superadmin_through_a_body(world: World) -> None:
    """Changes whose body names the superadmin role, or a superadmin, are refused the same way."""
    target = await world.person(Role.SUPERADMIN)
    someone = await world.person(Role.USER)
    changes = [
        ("POST", "/admin/users", {"email": f"authz-made-{next(_serial)}@example.com", "role": "superadmin"}),
        ("PATCH", f"/admin/users/{someone.id}", {"role": "superadmin"}),
        ("PATCH", f"/admin/users/{target.id}", {"role": "admin"}),
        ("POST", "/admin/invites", {"role": "superadmin"}),
        ("POST", "/admin/access/rules", {"user_id": target.id, "effect": "deny", "pattern": "*"}),
    ]
    failures = []
    for method, path, body in changes:
        response = await world.client.request(
            method, path, json=body, headers={"authorization": f"Bearer {world.admin.key}"}
        )
        if response.status_code != 403 or error_code(response) != "role_not_allowed":
            failures.append(
                f"{method} {path} {body} as an admin: expected 403 role_not_allowed, got {answer(response)}"
            )
    assert not failures, "\n".join(failures)


# --- the console's session cookie and its CSRF token ---------------------------------------------------------


async def test_cookie_changes_need_the_csrf_token(world: World) -> None:
    login = await world.client.post("/auth/login", json={"email": world.superadmin.email, "password": PASSWORD})
    assert login.status_code == 200, answer(login)
    session, token = login.cookies[SESSION_COOKIE], login.json()["csrf_token"]
    assert login.cookies[CSRF_COOKIE] == token
    cookie = {"cookie": f"{SESSION_COOKIE}={session}"}
    me = await world.client.get("/me", headers=cookie)  # a read needs no token
    assert me.status_code == 200 and me.json()["id"] == world.superadmin.id, answer(me)
    failures, checked = [], 0
    changes = [e for e in endpoints(world.harness.app) if e.method in MUTATING and e.access.role is not None]
    changes.sort(key=lambda e: e.path == "/auth/logout")  # ending the session comes last
    for endpoint in changes:
        path = PARAMETER.sub(MISSING_ID, endpoint.path)  # nothing is found: the calls change nothing
        body = body_of(endpoint)
        for sent, expect in ((None, "refused"), ("wrong" + token[5:], "refused"), (token, "passes")):
            headers = {**cookie, **({CSRF_HEADER: sent} if sent else {})}
            response = await world.client.request(endpoint.method, path, headers=headers, json=body)
            if expect == "refused":
                ok = response.status_code == 403 and "CSRF" in response.text
                ok = ok and (
                    endpoint.path.startswith("/api/") or error_code(response) in ("csrf_failed", "permission_error")
                )
            else:
                ok = response.status_code not in (401, 403, 500)
            if not ok:
                with_token = "no" if sent is None else ("the" if sent == token else "a wrong")
                failures.append(
                    f"{endpoint} with the cookie and {with_token} CSRF token: expected {expect}, got {answer(response)}"
                )
        checked += 1
    assert not failures, "\n".join(failures)
    ended = await world.client.get("/me", headers=cookie)  # the last change, with its token, was the logout
    assert ended.status_code == 401, answer(ended)
    assert checked >= 40, checked
