"""Invites and sign-up: the whole path, every refusal, racing redemptions, SIGNUP_MODE, listing, audit."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, update

from gatehouse.accounts.invites.models import Invite
from gatehouse.audit.models import AuditEvent
from gatehouse.auth import passwords
from gatehouse.auth.models import User
from gatehouse.db.base import utcnow
from tests.conftest import Harness, make_settings, running_app
from tests.support.server import ADMIN_EMAIL

PASSWORD = "a-good-long-password"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
_serial = itertools.count(1)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps each sign-up and login at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def fresh_email(tag: str = "someone") -> str:
    return f"{tag}-{next(_serial)}@example.com"


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI-shaped error object of a response."""
    error = response.json()["error"]
    assert isinstance(error, dict), response.text
    return error


@asynccontextmanager
async def anonymous(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no credentials, like a newcomer's browser."""
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as client:
        yield client


async def invite(harness: Harness, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    """A new invite, created by the bootstrap superadmin (or whoever `headers` name)."""
    response = await harness.client.post("/admin/invites", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def sign_up(harness: Harness, token: str | None, email: str, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": PASSWORD, **extra}
    if token is not None:
        body["invite"] = token
    async with anonymous(harness) as client:
        return await client.post("/auth/signup", json=body)


async def expire(harness: Harness, invite_id: int) -> None:
    """Move an invite's expiry into the past (an API refuses to create one there)."""
    async with harness.runtime.db.sessionmaker() as session:
        await session.execute(
            update(Invite).where(Invite.id == invite_id).values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()


async def audit_events(harness: Harness, action: str | None = None) -> list[AuditEvent]:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        return list((await session.execute(query)).scalars())


async def invite_row(harness: Harness, invite_id: int) -> Invite:
    async with harness.runtime.db.sessionmaker() as session:
        row = await session.get(Invite, invite_id)
        assert row is not None
        return row


async def count_users(harness: Harness, emails: list[str]) -> int:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(func.count()).select_from(User).where(User.email.in_(emails))
        return int((await session.execute(query)).scalar_one())


def output_so_far(request: pytest.FixtureRequest) -> str | None:
    """What the app has written to stdout and stderr during this test (None when pytest does not capture).

    pytest's own capture, not capfd: structlog loggers keep the stream they first wrote to, which for
    module-level loggers is the session-wide capture, not a per-test one.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None or not capture.is_globally_capturing():
        return None
    out, err = capture.read_global_capture()
    sys.stderr.write(err)  # back into the capture, so a failure report still shows it
    return str(out + err)


async def member_key(harness: Harness, role: str) -> str:
    """An API key of a new user with `role`."""
    user = await harness.client.post("/admin/users", json={"email": fresh_email(role), "role": role})
    assert user.status_code == 201, user.text
    key = await harness.client.post(f"/admin/users/{user.json()['id']}/keys", json={"name": "test"})
    assert key.status_code == 201, key.text
    raw: str = key.json()["key"]
    return raw


# --- the whole path ----------------------------------------------------------------------------------


async def test_invite_signup_login_key_and_chat(harness: Harness, request: pytest.FixtureRequest) -> None:
    created = await invite(harness, role="user", max_uses=1)
    token = created["token"]
    assert token.startswith("ghi_") and len(token) > 40
    assert created["link"] == f"http://gatehouse.test/signup?invite={token}"
    assert created["status"] == "active"
    assert (created["role"], created["max_uses"], created["uses"], created["email"]) == ("user", 1, 0, None)
    expires_at = datetime.fromisoformat(created["expires_at"])
    assert timedelta(hours=167) < expires_at - datetime.now(UTC) <= timedelta(hours=168)  # a week by default

    email = fresh_email("newcomer")
    signed = await sign_up(harness, token, email, display_name="New Comer")
    assert signed.status_code == 201, signed.text
    user = signed.json()
    assert (user["email"], user["role"], user["status"], user["display_name"]) == (email, "user", "active", "New Comer")
    assert signed.cookies.get("gatehouse_session") is None  # sign-up does not log in

    async with anonymous(harness) as client:
        login = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        csrf = login.json()["csrf_token"]
        key = await client.post("/me/keys", json={"name": "laptop"}, headers={"x-csrf-token": csrf})
        assert key.status_code == 201, key.text
        client.cookies.clear()
        chat = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key.json()['key']}"}
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]

    # Only the token's hash is stored; the use is counted.
    row = await invite_row(harness, created["id"])
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (row.uses, row.last_used_at is not None, row.created_by is not None) == (1, True, True)

    # The audit log tells who did what, and never holds the token.
    [made] = await audit_events(harness, "invite.created")
    assert (made.actor_type, made.actor_label, made.target_type, made.target_id) == (
        "key",
        ADMIN_EMAIL,
        "invite",
        str(created["id"]),
    )
    assert '"role":"user"' in made.details and '"max_uses":1' in made.details and '"email":null' in made.details
    assert created["expires_at"][:19] in made.details
    [joined] = await audit_events(harness, "user.signed_up")
    assert (joined.actor_type, joined.actor_id, joined.actor_label) == ("user", user["id"], email)
    assert (joined.target_type, joined.target_id, joined.client_ip) == ("user", str(user["id"]), "127.0.0.1")
    assert f'"invite_id":{created["id"]}' in joined.details
    [redeemed] = await audit_events(harness, "invite.redeemed")
    assert (redeemed.actor_id, redeemed.target_type, redeemed.target_id) == (user["id"], "invite", str(created["id"]))
    assert '"uses":1' in redeemed.details
    for event in await audit_events(harness):
        assert token not in " ".join(str(value) for value in vars(event).values())

    logged = output_so_far(request)
    if logged is not None:
        assert '"path":"/auth/signup"' in logged.replace(
            '": "', '":"'
        )  # the access log was captured, so the next check means something
        assert token not in logged


# --- refusals ----------------------------------------------------------------------------------------


async def test_expired_revoked_used_up_and_mismatched_invites_are_refused(harness: Harness) -> None:
    unknown = await sign_up(harness, "ghi_" + "x" * 43, fresh_email())
    assert unknown.status_code == 400
    assert (error_of(unknown)["code"], error_of(unknown)["param"]) == ("invite_invalid", "invite")

    expired = await invite(harness, expires_in_hours=1)
    await expire(harness, expired["id"])
    refused = await sign_up(harness, expired["token"], fresh_email())
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "invite_expired"
    assert "expired" in error_of(refused)["message"]

    revoked = await invite(harness, max_uses=5)
    first = await harness.client.delete(f"/admin/invites/{revoked['id']}")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "revoked"
    again = await harness.client.delete(f"/admin/invites/{revoked['id']}")  # idempotent
    assert again.status_code == 200
    assert again.json()["revoked_at"] == first.json()["revoked_at"]
    refused = await sign_up(harness, revoked["token"], fresh_email())
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "invite_revoked"
    [event] = await audit_events(harness, "invite.revoked")
    assert (event.actor_label, event.target_type, event.target_id) == (ADMIN_EMAIL, "invite", str(revoked["id"]))
    missing = await harness.client.delete("/admin/invites/999999")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "invite_not_found"

    once = await invite(harness, max_uses=1)
    assert (await sign_up(harness, once["token"], fresh_email())).status_code == 201
    refused = await sign_up(harness, once["token"], fresh_email())
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "invite_used_up"

    bound = await invite(harness, email="Bound@Example.com", max_uses=2)
    assert bound["email"] == "bound@example.com"
    refused = await sign_up(harness, bound["token"], "someone-else@example.com")
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "invite_email_mismatch"
    assert "bound@example.com" not in error_of(refused)["message"]  # the address is not revealed
    accepted = await sign_up(harness, bound["token"], "BOUND@example.com")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["email"] == "bound@example.com"

    # Refused sign-ups created nobody and counted nothing.
    assert (await invite_row(harness, bound["id"])).uses == 1
    assert len(await audit_events(harness, "user.signed_up")) == 2
    assert len(await audit_events(harness, "invite.redeemed")) == 2


async def test_a_taken_email_does_not_use_up_the_invite(harness: Harness) -> None:
    created = await invite(harness, max_uses=1)
    taken = await sign_up(harness, created["token"], ADMIN_EMAIL.upper())
    assert taken.status_code == 409
    assert error_of(taken)["code"] == "email_taken"
    short = await sign_up(harness, created["token"], fresh_email(), password="short")
    assert short.status_code == 422
    row = await invite_row(harness, created["id"])
    assert (row.uses, row.last_used_at) == (0, None)
    assert (await sign_up(harness, created["token"], fresh_email())).status_code == 201
    assert await audit_events(harness, "invite.redeemed") != []


async def test_invite_creation_is_validated(harness: Harness) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    refused = await harness.client.post("/admin/invites", json={"expires_at": past})
    assert refused.status_code == 400
    assert (error_of(refused)["code"], error_of(refused)["param"]) == ("invalid_expiry", "expires_at")
    for body in (
        {"max_uses": 0},
        {"max_uses": 10_001},
        {"expires_in_hours": 0},
        {"expires_in_hours": 8761},
        {"expires_in_hours": 2, "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
        {"expires_at": "2030-01-01T00:00:00"},  # no timezone
        {"email": "not-an-email"},
        {"role": "owner"},
    ):
        response = await harness.client.post("/admin/invites", json=body)
        assert response.status_code == 422, (body, response.text)
    at = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    created = await invite(harness, expires_at=at.isoformat(), max_uses=10_000, role="monitor")
    assert datetime.fromisoformat(created["expires_at"]) == at
    assert (created["max_uses"], created["role"]) == (10_000, "monitor")


# --- races -------------------------------------------------------------------------------------------


async def test_concurrent_redemptions_create_exactly_max_uses_users(harness: Harness) -> None:
    created = await invite(harness, max_uses=3)
    emails = [fresh_email("racer") for _ in range(10)]
    responses = await asyncio.gather(*(sign_up(harness, created["token"], email) for email in emails))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [400] * 7, [r.text for r in responses]
    assert {error_of(r)["code"] for r in responses if r.status_code == 400} == {"invite_used_up"}
    assert await count_users(harness, emails) == 3
    assert (await invite_row(harness, created["id"])).uses == 3
    assert len(await audit_events(harness, "invite.redeemed")) == 3


# --- SIGNUP_MODE -------------------------------------------------------------------------------------


async def test_invite_mode_needs_an_invite(harness: Harness) -> None:
    assert harness.settings.signup_mode == "invite"  # the default
    refused = await sign_up(harness, None, fresh_email())
    assert refused.status_code == 400
    assert (error_of(refused)["code"], error_of(refused)["param"]) == ("invite_required", "invite")

    # Sign-ups are limited per client IP, counted before anything else is checked.
    limited = await harness.client.put("/admin/rate-limits", json={"limits": {"signup": 2}})
    assert limited.status_code == 200, limited.text
    for _ in range(2):
        assert (await sign_up(harness, None, fresh_email())).status_code == 400
    too_many = await sign_up(harness, None, fresh_email())
    assert too_many.status_code == 429
    assert (error_of(too_many)["code"], error_of(too_many)["param"]) == ("rate_limited", "signup")


async def test_open_mode_takes_anyone_and_an_invite_sets_the_role(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path, signup_mode="open")) as harness:
        plain = await sign_up(harness, None, fresh_email())
        assert plain.status_code == 201, plain.text
        assert plain.json()["role"] == "user"
        monitor = await invite(harness, role="monitor")
        invited = await sign_up(harness, monitor["token"], fresh_email())
        assert invited.status_code == 201, invited.text
        assert invited.json()["role"] == "monitor"
        # An invite that is given must still be good.
        refused = await sign_up(harness, monitor["token"], fresh_email())
        assert refused.status_code == 400
        assert error_of(refused)["code"] == "invite_used_up"
        [event, _] = await audit_events(harness, "user.signed_up")
        assert '"mode":"open"' in event.details and '"invite_id":null' in event.details


async def test_closed_mode_refuses_everyone(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path, signup_mode="closed")) as harness:
        created = await invite(harness)
        for token in (None, created["token"]):
            refused = await sign_up(harness, token, fresh_email())
            assert refused.status_code == 403
            assert error_of(refused)["code"] == "signup_closed"
        assert (await invite_row(harness, created["id"])).uses == 0


# --- roles -------------------------------------------------------------------------------------------


async def test_only_a_superadmin_invites_a_superadmin(harness: Harness) -> None:
    admin = harness.as_key(await member_key(harness, "admin"))
    refused = await harness.client.post("/admin/invites", json={"role": "superadmin"}, headers=admin)
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "role_not_allowed"
    assert "superadmin" in error_of(refused)["message"]
    assert (await invite(harness, headers=admin, role="admin"))["role"] == "admin"

    monitor = harness.as_key(await member_key(harness, "monitor"))
    assert (await harness.client.post("/admin/invites", json={}, headers=monitor)).status_code == 403
    assert (await harness.client.get("/admin/invites", headers=monitor)).status_code == 403

    created = await invite(harness, role="superadmin")  # the bootstrap superadmin may
    joined = await sign_up(harness, created["token"], fresh_email("super"))
    assert joined.status_code == 201, joined.text
    assert joined.json()["role"] == "superadmin"


# --- listing -----------------------------------------------------------------------------------------


async def test_list_shows_statuses_filters_and_pages(harness: Harness) -> None:
    expired = await invite(harness)
    await expire(harness, expired["id"])
    used = await invite(harness, max_uses=1)
    assert (await sign_up(harness, used["token"], fresh_email())).status_code == 201
    revoked = await invite(harness)
    assert (await harness.client.delete(f"/admin/invites/{revoked['id']}")).status_code == 200
    active = [await invite(harness, max_uses=2) for _ in range(3)]

    listed = await harness.client.get("/admin/invites")
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["next_cursor"] is None
    ids = [item["id"] for item in page["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 6  # newest first
    statuses = {item["id"]: item["status"] for item in page["items"]}
    assert statuses[expired["id"]] == "expired"
    assert statuses[used["id"]] == "used_up"
    assert statuses[revoked["id"]] == "revoked"
    assert {statuses[a["id"]] for a in active} == {"active"}
    assert all("token" not in item and "token_hash" not in item for item in page["items"])

    for status, expected in (
        ("active", [a["id"] for a in reversed(active)]),
        ("expired", [expired["id"]]),
        ("used_up", [used["id"]]),
        ("revoked", [revoked["id"]]),
    ):
        filtered = await harness.client.get("/admin/invites", params={"status": status})
        assert filtered.status_code == 200, filtered.text
        assert [item["id"] for item in filtered.json()["items"]] == expected, status
    bad = await harness.client.get("/admin/invites", params={"status": "lost"})
    assert bad.status_code == 422

    seen: list[int] = []
    cursor: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4 if pages == 0 else 1}
        if cursor is not None:
            params["before"] = cursor
        response = await harness.client.get("/admin/invites", params=params)
        assert response.status_code == 200, response.text
        pages += 1
        seen += [item["id"] for item in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3  # 4, then 1 and 1 (the last full page knows nothing follows)
    filtered_page = await harness.client.get("/admin/invites", params={"status": "active", "limit": 2})
    assert [item["id"] for item in filtered_page.json()["items"]] == [active[2]["id"], active[1]["id"]]
    assert filtered_page.json()["next_cursor"] == active[1]["id"]
