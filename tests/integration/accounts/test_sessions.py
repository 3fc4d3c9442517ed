"""Login hardening: lockout per account and per address, backoff, the same answer for unknown emails, audit."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from gatehouse.accounts.sessions.lockout import backoff_seconds
from gatehouse.audit.models import AuditEvent
from gatehouse.auth import passwords
from gatehouse.auth.access import SESSION_COOKIE
from tests.conftest import Harness, make_settings, running_app
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD

PASSWORD = "a-good-long-password"


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps each login at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """The app with the login backoff off (one test below turns it on)."""
    async with running_app(make_settings(database_url, tmp_path, login_backoff_max_seconds=0)) as running:
        yield running


async def anonymous(harness: Harness, path: str, body: dict[str, Any]) -> httpx.Response:
    """A POST with no credentials, like a browser on the login page."""
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as client:
        return await client.post(path, json=body)


async def attempt(harness: Harness, email: str, password: str) -> httpx.Response:
    return await anonymous(harness, "/auth/login", {"email": email, "password": password})


async def new_user(harness: Harness, *, role: str = "user") -> dict[str, Any]:
    email = f"{role}-{time.monotonic_ns()}@example.com"
    response = await harness.client.post("/admin/users", json={"email": email, "role": role, "password": PASSWORD})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def set_limits(harness: Harness, **limits: int | None) -> None:
    response = await harness.client.put("/admin/rate-limits", json={"limits": limits})
    assert response.status_code == 200, response.text


async def events(harness: Harness, action: str) -> list[AuditEvent]:
    async with harness.runtime.db.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.action == action))).scalars()
        return list(rows)


def without_digits(text: str) -> str:
    return re.sub(r"\d+", "N", text)


async def test_account_lockout_looks_the_same_for_unknown_emails(app: Harness) -> None:
    await set_limits(app, login_failures_account=3)
    user = await new_user(app)
    refusals: dict[str, httpx.Response] = {}
    for email in (user["email"], "nobody-here@example.com"):
        for _ in range(3):
            wrong = await attempt(app, email, "not-the-password")
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"
        # Locked: even the right password is refused until the window moves on.
        refusals[email] = await attempt(app, email, PASSWORD)
    known, unknown = refusals.values()
    for response in (known, unknown):
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "login_locked"
        assert 0 < int(response.headers["retry-after"]) <= 3600
    assert without_digits(known.json()["error"]["message"]) == without_digits(unknown.json()["error"]["message"])
    assert set(known.headers) - {"x-request-id", "date"} == set(unknown.headers) - {"x-request-id", "date"}
    # Another account, from the same address, is not affected; the lockout ends when the limit is lifted.
    assert (await attempt(app, ADMIN_EMAIL, ADMIN_PASSWORD)).status_code == 200
    await set_limits(app, login_failures_account=None)
    assert (await attempt(app, user["email"], PASSWORD)).status_code == 200


async def test_email_case_and_spaces_do_not_escape_the_lockout(app: Harness) -> None:
    await set_limits(app, login_failures_account=2)
    user = await new_user(app)
    for email in (user["email"].upper(), f"  {user['email']} "):
        assert (await attempt(app, email, "not-the-password")).status_code == 401
    assert (await attempt(app, user["email"], PASSWORD)).status_code == 429


async def test_successful_logins_do_not_count(app: Harness) -> None:
    await set_limits(app, login_failures_account=2)
    user = await new_user(app)
    for _ in range(4):
        assert (await attempt(app, user["email"], PASSWORD)).status_code == 200
    assert (await attempt(app, user["email"], "not-the-password")).status_code == 401


async def test_address_lockout_covers_every_account(app: Harness) -> None:
    await set_limits(app, login_failures_ip=4)
    for n in range(4):
        assert (await attempt(app, f"guess-{n}@example.com", "not-the-password")).status_code == 401
    locked = await attempt(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "login_locked"
    assert "your address" in locked.json()["error"]["message"]
    assert "retry-after" in locked.headers
    # API keys are not logins: they keep working from the locked address.
    assert (await app.client.get("/me")).status_code == 200


def test_backoff_grows_and_is_bounded() -> None:
    assert [backoff_seconds(n, 8) for n in range(1, 9)] == [0, 0, 1, 2, 4, 8, 8, 8]
    assert backoff_seconds(50, 8) == 8
    assert backoff_seconds(1000, 3600) == 3600
    assert backoff_seconds(10, 0) == 0


async def test_failed_logins_are_answered_later_after_the_third(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path, login_backoff_max_seconds=0.3)) as harness:
        times = []
        for _ in range(4):
            started = time.monotonic()
            assert (await attempt(harness, "someone@example.com", "not-the-password")).status_code == 401
            times.append(time.monotonic() - started)
        # From the third failure on, each answer waits (bounded by the setting; no upper bounds on timing here).
        assert times[2] >= 0.3 and times[3] >= 0.3, times
        assert (await attempt(harness, ADMIN_EMAIL, ADMIN_PASSWORD)).status_code == 200


async def test_logins_and_logouts_are_audited_without_secrets(app: Harness) -> None:
    user = await new_user(app)
    wrong_password = "a-secret-guess-123"
    assert (await attempt(app, user["email"], wrong_password)).status_code == 401
    assert (await attempt(app, "typo-user@example.com", wrong_password)).status_code == 401
    good = await attempt(app, user["email"], PASSWORD)
    assert good.status_code == 200
    session = good.cookies[SESSION_COOKIE]
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as client:
        out = await client.post(
            "/auth/logout",
            headers={"cookie": f"{SESSION_COOKIE}={session}", "x-csrf-token": good.json()["csrf_token"]},
        )
        assert out.status_code == 204

    succeeded = [e for e in await events(app, "login.succeeded") if e.target_id == str(user["id"])]
    assert len(succeeded) == 1
    assert (succeeded[0].actor_type, succeeded[0].actor_id, succeeded[0].target_type) == ("user", user["id"], "user")
    assert succeeded[0].client_ip

    failed = await events(app, "login.failed")
    known = [e for e in failed if e.target_id == str(user["id"])]
    unknown = [e for e in failed if e.target_id is None]
    assert len(known) == 1 and len(unknown) == 1
    for event in failed:
        assert event.actor_type == "anonymous" and event.actor_id is None and event.client_ip
        assert '"reason":"bad_credentials"' in event.details and '"email_hash":' in event.details
    assert user["email"] in known[0].details
    assert "typo-user" not in unknown[0].details  # an unknown "email" may be a mistyped password

    logout = await events(app, "session.ended")
    assert len(logout) == 1
    assert (logout[0].actor_type, logout[0].actor_id, logout[0].target_id) == ("user", user["id"], str(user["id"]))

    async with app.runtime.db.sessionmaker() as db:
        every = (await db.execute(select(AuditEvent.details))).scalars().all()
    for details in every:
        assert wrong_password not in details and PASSWORD not in details and ADMIN_PASSWORD not in details


async def test_locked_and_inactive_logins_are_audited(app: Harness) -> None:
    await set_limits(app, login_failures_account=1)
    user = await new_user(app)
    assert (await attempt(app, user["email"], "not-the-password")).status_code == 401
    assert (await attempt(app, user["email"], PASSWORD)).status_code == 429
    await set_limits(app, login_failures_account=None)
    disabled = await new_user(app)
    assert (await app.client.post(f"/admin/users/{disabled['id']}/disable")).status_code == 200
    refused = await attempt(app, disabled["email"], PASSWORD)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_disabled"
    reasons = {(e.target_id, json.loads(e.details)["reason"]) for e in await events(app, "login.failed")}
    assert reasons == {
        (str(user["id"]), "bad_credentials"),
        (str(user["id"]), "locked"),
        (str(disabled["id"]), "inactive"),
    }
