"""Accounts: console login and CSRF, users, API keys, disable/enable, errors, limits, the warm hot path, bootstrap."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import event, func, select

from gatehouse.accounts.bootstrap import BOOTSTRAP_KEY_NAME
from gatehouse.auth import passwords
from gatehouse.auth.access import CSRF_COOKIE, SESSION_COOKIE
from gatehouse.auth.models import ApiKey, User, UserSession
from gatehouse.core.metrics import statement_kind
from gatehouse.gateway.models import RequestLog
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import create_member, create_user, error_of
from tests.support.server import ADMIN_EMAIL, ADMIN_KEY, ADMIN_PASSWORD

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
PASSWORD = "a-good-long-password"


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps each login and bootstrap at a millisecond, not a quarter second."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@asynccontextmanager
async def browser(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no Authorization header, like a browser on the console."""
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as client:
        yield client


def cookie_attributes(response: httpx.Response, name: str) -> tuple[str, set[str]]:
    """The value and lower-cased attributes of the Set-Cookie header for `name`."""
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        cookie_name, _, value = first.partition("=")
        if cookie_name == name:
            return value, {a.lower() for a in attributes}
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


async def login(client: httpx.AsyncClient, email: str, password: str) -> tuple[str, str]:
    """Log in; returns (session cookie value, CSRF token). The client's cookie jar is left empty."""
    response = await client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    session, _ = cookie_attributes(response, SESSION_COOKIE)
    client.cookies.clear()
    return session, response.json()["csrf_token"]


def session_headers(session: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"cookie": f"{SESSION_COOKIE}={session}"}
    if csrf is not None:
        headers["x-csrf-token"] = csrf
    return headers


# --- console sessions ------------------------------------------------------------------------------


async def test_login_session_cookie_csrf_and_logout(harness: Harness) -> None:
    async with browser(harness) as client:
        response = await client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user"]["email"] == ADMIN_EMAIL
        assert body["user"]["role"] == "superadmin"
        assert body["user"]["last_login_at"] is not None

        session, session_attributes = cookie_attributes(response, SESSION_COOKIE)
        assert session
        assert "httponly" in session_attributes
        assert "samesite=lax" in session_attributes
        assert "secure" not in session_attributes  # dev serves plain http
        csrf, csrf_attributes = cookie_attributes(response, CSRF_COOKIE)
        assert csrf == body["csrf_token"]
        assert "httponly" not in csrf_attributes  # the console's script reads it

        # As a browser does: the cookie jar carries the session.
        via_jar = await client.get("/me")
        assert via_jar.status_code == 200, via_jar.text
        assert via_jar.json()["email"] == ADMIN_EMAIL
        client.cookies.clear()  # from here on, cookies are sent explicitly

        me = await client.get("/me", headers=session_headers(session))
        assert me.status_code == 200, me.text
        assert me.json()["email"] == ADMIN_EMAIL

        no_csrf = await client.post("/me/keys", json={"name": "console"}, headers=session_headers(session))
        assert no_csrf.status_code == 403
        assert error_of(no_csrf)["code"] == "csrf_failed"
        wrong_csrf = await client.post("/me/keys", json={"name": "console"}, headers=session_headers(session, "x" * 64))
        assert wrong_csrf.status_code == 403
        assert error_of(wrong_csrf)["code"] == "csrf_failed"
        created = await client.post("/me/keys", json={"name": "console"}, headers=session_headers(session, csrf))
        assert created.status_code == 201, created.text

        logout = await client.post("/auth/logout", headers=session_headers(session, csrf))
        assert logout.status_code == 204, logout.text
        # The old cookie, replayed, no longer opens anything: the session is gone server-side.
        after = await client.get("/me", headers=session_headers(session))
        assert after.status_code == 401
        assert error_of(after)["code"] == "session_expired"
        forged = await client.get("/me", headers=session_headers("not-a-session"))
        assert forged.status_code == 401
        assert error_of(forged)["code"] == "session_expired"


async def test_wrong_password_and_unknown_email_look_the_same(harness: Harness) -> None:
    async with browser(harness) as client:
        wrong = await client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": "not-the-password"})
        unknown = await client.post("/auth/login", json={"email": "nobody@example.com", "password": ADMIN_PASSWORD})
        for response in (wrong, unknown):
            assert response.status_code == 401
            assert error_of(response)["code"] == "invalid_credentials"
            assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
        assert error_of(wrong)["message"] == error_of(unknown)["message"]


async def test_user_without_password_cannot_log_in(harness: Harness) -> None:
    user = await create_user(harness)  # keys only
    async with browser(harness) as client:
        response = await client.post("/auth/login", json={"email": user["email"], "password": "anything-at-all"})
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_credentials"


async def test_emails_are_case_insensitive(harness: Harness) -> None:
    first = await harness.client.post("/admin/users", json={"email": "Alice@Example.com", "password": PASSWORD})
    assert first.status_code == 201, first.text
    assert first.json()["email"] == "alice@example.com"
    again = await harness.client.post("/admin/users", json={"email": "alice@example.com"})
    assert again.status_code == 409
    assert error_of(again)["code"] == "email_taken"
    async with browser(harness) as client:
        for spelling in ("alice@example.com", "ALICE@EXAMPLE.COM", "Alice@Example.com"):
            response = await client.post("/auth/login", json={"email": spelling, "password": PASSWORD})
            assert response.status_code == 200, (spelling, response.text)
            assert response.json()["user"]["id"] == first.json()["id"]


# --- users -----------------------------------------------------------------------------------------


async def test_admin_creates_and_reads_users(harness: Harness) -> None:
    created = await harness.client.post(
        "/admin/users", json={"email": "bob@example.com", "role": "monitor", "display_name": "Bob"}
    )
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["role"] == "monitor"
    assert user["status"] == "active"
    assert user["display_name"] == "Bob"
    assert "password" not in created.text

    read = await harness.client.get(f"/admin/users/{user['id']}")
    assert read.status_code == 200
    assert read.json() == user

    missing = await harness.client.get("/admin/users/999999")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "user_not_found"

    defaulted = await create_user(harness)
    assert defaulted["role"] == "user"
    assert defaulted["display_name"] == defaulted["email"].split("@")[0]


async def test_user_validation_names_the_field(harness: Harness) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"email": "not-an-email"}, "email"),
        ({}, "email"),
        ({"email": "carol@example.com", "password": "short"}, "password"),
        ({"email": "carol@example.com", "role": "emperor"}, "role"),
    ]
    for body, param in cases:
        response = await harness.client.post("/admin/users", json=body)
        assert response.status_code == 422, (body, response.text)
        error = error_of(response)
        assert error["code"] == "validation_error"
        assert error["param"] == param
        assert param in error["message"]

    broken = await harness.client.post(
        "/admin/users", content=b'{"email": oops}', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    assert error_of(broken)["param"] == "body"
    assert "not valid JSON at character 10" in error_of(broken)["message"]
    bad_path = await harness.client.get("/admin/users/abc")
    assert bad_path.status_code == 422
    assert error_of(bad_path)["param"] == "user_id"


async def test_concurrent_creates_make_one_user_per_email(harness: Harness) -> None:
    async def create(email: str) -> int | str:
        try:
            return (await harness.client.post("/admin/users", json={"email": email, "password": PASSWORD})).status_code
        except Exception as exc:  # the in-process transport re-raises what became a 500
            return type(exc).__name__

    same = await asyncio.gather(*(create("race@example.com") for _ in range(4)))
    assert sorted(same, key=str) == [201, 409, 409, 409]
    distinct = await asyncio.gather(*(create(f"race-{i}@example.com") for i in range(4)))
    assert distinct == [201, 201, 201, 201]


async def test_admin_cannot_create_superadmin(harness: Harness) -> None:
    admin = await create_member(harness, "admin")
    headers = harness.as_key(admin.key)
    denied = await harness.client.post(
        "/admin/users", json={"email": "boss@example.com", "role": "superadmin"}, headers=headers
    )
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "role_not_allowed"
    allowed = await harness.client.post(
        "/admin/users", json={"email": "peer@example.com", "role": "admin"}, headers=headers
    )
    assert allowed.status_code == 201, allowed.text
    by_superadmin = await harness.client.post("/admin/users", json={"email": "boss@example.com", "role": "superadmin"})
    assert by_superadmin.status_code == 201, by_superadmin.text


# --- API keys --------------------------------------------------------------------------------------


async def test_key_lifecycle_and_immediate_revocation(harness: Harness) -> None:
    member = await create_member(harness)
    mine = harness.as_key(member.key)

    created = await harness.client.post("/me/keys", json={"name": "laptop"}, headers=mine)
    assert created.status_code == 201, created.text
    key = created.json()
    raw = key["key"]
    assert raw.startswith("gh_")
    assert len(raw) > 40
    assert key["prefix"] == raw[:10]
    assert key["user_id"] == member.id
    assert key["name"] == "laptop"
    assert key["revoked_at"] is None

    listed = await harness.client.get("/me/keys", headers=mine)
    assert listed.status_code == 200
    assert {k["id"] for k in listed.json()} == {key["id"], member.key_id}
    assert all("key" not in k for k in listed.json())
    assert raw not in listed.text
    assert member.key not in listed.text

    # Used once, so the key sits in the auth cache when it is revoked.
    assert (await harness.client.get("/v1/models", headers=harness.as_key(raw))).status_code == 200
    revoked = await harness.client.delete(f"/me/keys/{key['id']}", headers=mine)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    refused = await harness.client.get("/v1/models", headers=harness.as_key(raw))
    assert refused.status_code == 401
    assert error_of(refused)["code"] == "invalid_api_key"
    assert (await harness.client.get("/v1/models", headers=mine)).status_code == 200

    again = await harness.client.delete(f"/me/keys/{key['id']}", headers=mine)
    assert again.status_code == 200  # idempotent
    listed = await harness.client.get("/me/keys", headers=mine)
    assert {k["id"]: k["revoked_at"] is not None for k in listed.json()} == {key["id"]: True, member.key_id: False}


async def test_cannot_revoke_another_users_key(harness: Harness) -> None:
    alice = await create_member(harness)
    bob = await create_member(harness)
    response = await harness.client.delete(f"/me/keys/{alice.key_id}", headers=harness.as_key(bob.key))
    assert response.status_code == 404
    assert error_of(response)["code"] == "key_not_found"
    assert (await harness.client.get("/v1/models", headers=harness.as_key(alice.key))).status_code == 200
    missing = await harness.client.delete("/me/keys/999999", headers=harness.as_key(bob.key))
    assert missing.status_code == 404


async def test_key_expiry(harness: Harness) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    refused = await harness.client.post("/me/keys", json={"name": "old", "expires_at": past})
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "invalid_expiry"
    assert error_of(refused)["param"] == "expires_at"

    naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    response = await harness.client.post("/me/keys", json={"name": "naive", "expires_at": naive})
    assert response.status_code == 422, response.text
    assert error_of(response)["param"] == "expires_at"
    assert "expires_at" in error_of(response)["message"]

    expires = datetime.now(UTC) + timedelta(seconds=1)
    created = await harness.client.post("/me/keys", json={"name": "brief", "expires_at": expires.isoformat()})
    assert created.status_code == 201, created.text
    assert datetime.fromisoformat(created.json()["expires_at"]) == expires
    brief = harness.as_key(created.json()["key"])
    assert (await harness.client.get("/v1/models", headers=brief)).status_code == 200  # now cached
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    expired = await harness.client.get("/v1/models", headers=brief)
    assert expired.status_code == 401
    assert error_of(expired)["code"] == "expired_api_key"


async def test_admin_creates_keys_for_users_not_superadmins(harness: Harness) -> None:
    user = await create_user(harness)
    created = await harness.client.post(f"/admin/users/{user['id']}/keys", json={"name": "service"})
    assert created.status_code == 201, created.text
    me = await harness.client.get("/me", headers=harness.as_key(created.json()["key"]))
    assert me.status_code == 200
    assert me.json()["id"] == user["id"]

    missing = await harness.client.post("/admin/users/999999/keys", json={"name": "x"})
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "user_not_found"

    admin = await create_member(harness, "admin")
    superadmin_id = (await harness.client.get("/me")).json()["id"]
    denied = await harness.client.post(
        f"/admin/users/{superadmin_id}/keys", json={"name": "sneaky"}, headers=harness.as_key(admin.key)
    )
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "role_not_allowed"
    by_admin = await harness.client.post(
        f"/admin/users/{user['id']}/keys", json={"name": "fine"}, headers=harness.as_key(admin.key)
    )
    assert by_admin.status_code == 201, by_admin.text


# --- disable / enable ------------------------------------------------------------------------------


async def test_disable_stops_keys_and_sessions_at_once(harness: Harness) -> None:
    member = await create_member(harness, password=PASSWORD)
    key = harness.as_key(member.key)
    assert (await harness.client.get("/v1/models", headers=key)).status_code == 200  # cached from here on
    async with browser(harness) as client:
        session, _csrf = await login(client, member.email, PASSWORD)
        assert (await client.get("/me", headers=session_headers(session))).status_code == 200

        disabled = await harness.client.post(f"/admin/users/{member.id}/disable")
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["status"] == "disabled"

        refused = await harness.client.get("/v1/models", headers=key)
        assert refused.status_code == 403
        assert error_of(refused)["code"] == "account_disabled"
        ended = await client.get("/me", headers=session_headers(session))
        assert ended.status_code == 401
        assert error_of(ended)["code"] == "session_expired"
        async with harness.runtime.db.sessionmaker() as db:
            count = select(func.count()).select_from(UserSession).where(UserSession.user_id == member.id)
            assert (await db.execute(count)).scalar_one() == 0

        no_login = await client.post("/auth/login", json={"email": member.email, "password": PASSWORD})
        assert no_login.status_code == 403
        assert error_of(no_login)["code"] == "account_disabled"

        enabled = await harness.client.post(f"/admin/users/{member.id}/enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["status"] == "active"
        assert (await harness.client.get("/v1/models", headers=key)).status_code == 200
        await login(client, member.email, PASSWORD)


async def test_nobody_disables_themselves_and_admins_leave_superadmins_alone(harness: Harness) -> None:
    admin = await create_member(harness, "admin")
    own = await harness.client.post(f"/admin/users/{admin.id}/disable", headers=harness.as_key(admin.key))
    assert own.status_code == 403
    assert error_of(own)["code"] == "self_disable"
    superadmin_id = (await harness.client.get("/me")).json()["id"]
    self_super = await harness.client.post(f"/admin/users/{superadmin_id}/disable")
    assert self_super.status_code == 403
    assert error_of(self_super)["code"] == "self_disable"
    on_super = await harness.client.post(f"/admin/users/{superadmin_id}/disable", headers=harness.as_key(admin.key))
    assert on_super.status_code == 403
    assert error_of(on_super)["code"] == "role_not_allowed"
    assert (await harness.client.get("/me", headers=harness.as_key(admin.key))).status_code == 200
    assert (await harness.client.get("/me")).status_code == 200

    other_admin = await create_member(harness, "admin")
    by_admin = await harness.client.post(f"/admin/users/{other_admin.id}/disable", headers=harness.as_key(admin.key))
    assert by_admin.status_code == 200, by_admin.text
    missing = await harness.client.post("/admin/users/999999/disable")
    assert missing.status_code == 404


# --- authentication errors -------------------------------------------------------------------------


async def test_role_and_credential_checks(harness: Harness) -> None:
    user = await create_member(harness)
    for response, needed in (
        (
            await harness.client.post(
                "/admin/users", json={"email": "x@example.com"}, headers=harness.as_key(user.key)
            ),
            "admin",
        ),
        (await harness.client.get(f"/admin/users/{user.id}", headers=harness.as_key(user.key)), "monitor"),
    ):
        assert response.status_code == 403
        assert error_of(response)["code"] == "forbidden"
        assert f"needs the {needed} role" in error_of(response)["message"]

    async with browser(harness) as client:
        anonymous = await client.get("/me")
        assert anonymous.status_code == 401
        assert error_of(anonymous)["code"] == "missing_api_key"
        assert "Authorization: Bearer" in error_of(anonymous)["message"]
        for header in ("Token x", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz"):
            malformed = await client.get("/v1/models", headers={"authorization": header})
            assert malformed.status_code == 401, header
            assert error_of(malformed)["type"] == "authentication_error"
        unknown = await client.get("/v1/models", headers={"authorization": "Bearer gh_no_such_key"})
        assert unknown.status_code == 401
        assert error_of(unknown)["code"] == "invalid_api_key"
        # Bearer is case-insensitive, as RFC 6750 clients sometimes send it.
        lower = await client.get("/v1/models", headers={"authorization": f"bearer {user.key}"})
        assert lower.status_code == 200


async def test_ollama_routes_answer_errors_in_ollama_shape(harness: Harness) -> None:
    async with browser(harness) as client:
        ollama = await client.get("/api/tags")
        assert ollama.status_code == 401
        assert isinstance(ollama.json()["error"], str)
        assert "API key" in ollama.json()["error"]
        openai = await client.get("/v1/models")
        assert openai.status_code == 401
        assert set(openai.json()["error"]) >= {"type", "code", "message"}
        assert (await client.get("/api/version")).status_code == 200


async def test_body_size_limit(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path, max_request_bytes=2048)) as harness:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
        response = await harness.client.post("/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert error_of(response)["code"] == "payload_too_large"
        assert "MAX_REQUEST_BYTES" in error_of(response)["message"]
        ollama = await harness.client.post("/api/chat", json={**big, "stream": False})
        assert ollama.status_code == 413
        assert isinstance(ollama.json()["error"], str)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 512

        # Without a Content-Length, the limit is enforced while the body streams in.
        for path in ("/v1/chat/completions", "/me/keys"):  # read by the route, or parsed by FastAPI
            streamed = await harness.client.post(path, content=chunks(), headers={"content-type": "application/json"})
            assert streamed.status_code == 413, (path, streamed.text)
            assert error_of(streamed)["code"] == "payload_too_large"
        small = await harness.client.post(
            "/me/keys", content=b'{"name": "small"}', headers={"content-type": "application/json"}
        )
        assert small.status_code == 201, small.text
        assert (await harness.client.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_request_id_echoed_or_generated(harness: Harness) -> None:
    echoed = await harness.client.get("/healthz", headers={"x-request-id": "abc"})
    assert echoed.headers["x-request-id"] == "abc"
    generated = await harness.client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert generated.headers["x-request-id"] != (await harness.client.get("/healthz")).headers["x-request-id"]
    async with browser(harness) as client:
        error = await client.get("/me", headers={"x-request-id": "err-1"})
        assert error.status_code == 401
        assert error.headers["x-request-id"] == "err-1"
    too_long = await harness.client.get("/healthz", headers={"x-request-id": "a" * 500})
    assert too_long.headers["x-request-id"] != "a" * 500


# --- the hot path ----------------------------------------------------------------------------------


async def test_warm_key_chat_reads_nothing_and_log_is_batched(database_url: str, tmp_path: Path) -> None:
    # No background statement (a heartbeat, a checkpoint, a recovery check) within the test: only the request's own.
    quiet = {"request_log_flush_seconds": 3600, "quota_checkpoint_seconds": 60, "replica_heartbeat_seconds": 60}
    async with running_app(make_settings(database_url, tmp_path, **quiet)) as harness:
        member = await create_member(harness)
        key = harness.as_key(member.key)
        warm = await harness.client.post("/v1/chat/completions", json=CHAT, headers=key)
        assert warm.status_code == 200, warm.text
        assert await harness.runtime.request_log.flush() == 1

        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(" ".join(statement.split()))

        # Every engine of the process: the main one and the one for single atomic statements (quotas).
        engines = [harness.runtime.db.engine.sync_engine, harness.runtime.db.autocommit_engine.sync_engine]
        for engine in engines:
            event.listen(engine, "before_cursor_execute", record)
        # SQLite's quota statements bypass the engines (db/statements.py SqliteStore) and report here instead.
        harness.runtime.statements.trace = lambda sql: record(None, None, sql)
        try:
            hot = await harness.client.post("/v1/chat/completions", json=CHAT, headers=key)
            assert hot.status_code == 200, hot.text
            # SQLite's explicit BEGIN (db/engine.py) is transaction control, not a read.
            hot_path = [s for s in statements if not s.upper().startswith("BEGIN")]
            reads = [s for s in hot_path if statement_kind(s) not in ("INSERT", "UPDATE", "DELETE")]
            assert reads == [], "a warm-key chat request read the database"
            # The budget (DESIGN.md): one atomic write to reserve the quota and one to settle it, nothing else. Each
            # is the counter's conditional UPDATE and the reservation's row: one statement on PostgreSQL (a
            # data-modifying CTE), one transaction of two on SQLite (db/statements.py `chain`).
            if database_url.startswith("postgresql"):
                assert len(hot_path) == 2, hot_path
                reserve, settle = hot_path
                assert reserve.startswith("WITH admitted AS (UPDATE usage_counter SET messages="), reserve
                assert "INSERT INTO quota_reservation" in reserve and "RETURNING" in reserve, reserve
                assert settle.startswith("WITH released AS (DELETE FROM quota_reservation"), settle
                assert "UPDATE usage_counter SET tokens=" in settle, settle
            else:
                assert len(hot_path) == 4, hot_path
                assert hot_path[0].startswith("UPDATE usage_counter SET messages="), hot_path
                assert "RETURNING" in hot_path[0] and "last_grant" in hot_path[0], hot_path
                assert hot_path[1].startswith("INSERT INTO quota_reservation "), hot_path
                assert hot_path[2].startswith("DELETE FROM quota_reservation "), hot_path
                assert hot_path[3].startswith("UPDATE usage_counter SET tokens="), hot_path
            assert harness.runtime.request_log.pending == 1
            statements.clear()
            assert await harness.runtime.request_log.flush() == 1
        finally:
            harness.runtime.statements.trace = None
            for engine in engines:
                event.remove(engine, "before_cursor_execute", record)

        writes = [s for s in statements if not s.upper().startswith("BEGIN")]
        assert len(writes) == 2, writes
        assert writes[0].startswith("INSERT INTO request_log "), writes
        assert writes[1].startswith("UPDATE api_key SET last_used_at="), writes

        async with harness.runtime.db.sessionmaker() as db:
            rows = (await db.execute(select(RequestLog).order_by(RequestLog.id))).scalars().all()
            last_used = (await db.execute(select(ApiKey.last_used_at).where(ApiKey.id == member.key_id))).scalar_one()
        assert len(rows) == 2
        for row in rows:
            assert row.user_id == member.id
            assert row.key_id == member.key_id
            assert row.model == "demo"
            assert row.upstream == "demo"
            assert row.endpoint == "chat"
            assert row.protocol == "openai"
            assert row.stream is False
            assert row.prompt_tokens > 0
            assert row.completion_tokens > 0
            assert row.status_code == 200
            assert row.error_code is None
            assert row.latency_ms > 0
        assert rows[1].request_id == hot.headers["x-request-id"]
        assert last_used is not None


# --- bootstrap -------------------------------------------------------------------------------------


async def _bootstrap_rows(harness: Harness) -> tuple[int, int]:
    async with harness.runtime.db.sessionmaker() as db:
        users = (await db.execute(select(func.count()).select_from(User).where(User.email == ADMIN_EMAIL))).scalar_one()
        keys = (
            await db.execute(
                select(func.count())
                .select_from(ApiKey)
                .join(User, User.id == ApiKey.user_id)
                .where(User.email == ADMIN_EMAIL, ApiKey.name == BOOTSTRAP_KEY_NAME)
            )
        ).scalar_one()
    return users, keys


async def test_bootstrap_is_idempotent(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    for _start in range(2):
        async with running_app(settings) as harness:
            me = await harness.client.get("/me")  # authenticated with BOOTSTRAP_ADMIN_API_KEY
            assert me.status_code == 200, me.text
            assert me.json()["email"] == ADMIN_EMAIL
            assert me.json()["role"] == "superadmin"
            assert await _bootstrap_rows(harness) == (1, 1)
            async with browser(harness) as client:
                await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


async def test_bootstrap_generates_a_key_once(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, bootstrap_admin_api_key="", bootstrap_admin_password="")
    for _start in range(2):
        async with running_app(settings) as harness:
            assert await _bootstrap_rows(harness) == (1, 1)
            # The configured test key was never given, so it is not a key here.
            assert (await harness.client.get("/me", headers=harness.as_key(ADMIN_KEY))).status_code == 401


async def test_bootstrap_admin_with_a_local_domain_can_log_in(database_url: str, tmp_path: Path) -> None:
    # Self-hosters use addresses like admin@localhost, which strict e-mail validation would refuse at login.
    settings = make_settings(database_url, tmp_path, bootstrap_admin_email="Admin@Localhost")
    async with running_app(settings) as harness:
        assert (await harness.client.get("/me")).json()["email"] == "admin@localhost"
        async with browser(harness) as client:
            await login(client, "admin@localhost", ADMIN_PASSWORD)
            odd = await client.post("/auth/login", json={"email": "not an address", "password": ADMIN_PASSWORD})
            assert odd.status_code == 401
            assert error_of(odd)["code"] == "invalid_credentials"
