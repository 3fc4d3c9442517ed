"""Key administration: GET/DELETE /admin/keys, key audit events, `gatehouse keys rotate-bootstrap` and `list`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from gatehouse.accounts.bootstrap import BOOTSTRAP_KEY_NAME
from gatehouse.audit.models import AuditEvent
from gatehouse.auth import passwords
from tests.conftest import Harness, make_settings, running_app
from tests.support.server import ADMIN_EMAIL, ADMIN_KEY


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps bootstrap at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


async def new_member(harness: Harness, role: str = "user", *, keys: int = 1) -> tuple[int, list[dict[str, Any]]]:
    """A user of `role` with `keys` keys (each answer holds the key itself)."""
    email = f"{role}-{time.monotonic_ns()}@example.com"
    user = await harness.client.post("/admin/users", json={"email": email, "role": role})
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    made = []
    for n in range(keys):
        key = await harness.client.post(f"/admin/users/{user_id}/keys", json={"name": f"k{n}"})
        assert key.status_code == 201, key.text
        made.append(key.json())
    return user_id, made


async def events(harness: Harness, action: str) -> list[AuditEvent]:
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.action == action))).scalars())


async def test_list_keys_filters_and_pages(harness: Harness) -> None:
    user_id, keys = await new_member(harness, keys=5)
    other_id, _ = await new_member(harness, keys=1)
    revoked = keys[0]
    assert (await harness.client.delete(f"/admin/keys/{revoked['id']}")).status_code == 200
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expiring = await harness.client.post(f"/admin/users/{user_id}/keys", json={"name": "brief", "expires_at": soon})
    assert expiring.status_code == 201

    everyone = (await harness.client.get("/admin/keys")).json()
    assert {k["user_id"] for k in everyone["items"]} >= {user_id, other_id}
    assert all("key" not in k and "key_hash" not in k for k in everyone["items"])

    mine = (await harness.client.get("/admin/keys", params={"user_id": user_id})).json()
    assert [k["id"] for k in mine["items"]] == sorted((k["id"] for k in [*keys, expiring.json()]), reverse=True)
    assert mine["next_cursor"] is None

    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"user_id": user_id, "limit": 2}
        if cursor is not None:
            params["before"] = cursor
        page = (await harness.client.get("/admin/keys", params=params)).json()
        pages.append([k["id"] for k in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [i for p in pages for i in p] == [k["id"] for k in mine["items"]]
    assert [len(p) for p in pages] == [2, 2, 2]

    def ids(state: str) -> set[int]:
        return {k["id"] for k in mine_by_state[state]}

    await asyncio.sleep(2.1)  # the brief key has expired
    mine_by_state = {
        state: (await harness.client.get("/admin/keys", params={"user_id": user_id, "state": state})).json()["items"]
        for state in ("active", "revoked", "expired")
    }
    assert ids("revoked") == {revoked["id"]}
    assert ids("expired") == {expiring.json()["id"]}
    assert ids("active") == {k["id"] for k in keys[1:]}
    bad = await harness.client.get("/admin/keys", params={"state": "gone"})
    assert bad.status_code == 422


async def test_revoking_a_key_refuses_it_at_once_and_is_audited(harness: Harness) -> None:
    user_id, (key,) = await new_member(harness)
    as_member = harness.as_key(key["key"])
    assert (await harness.client.get("/me", headers=as_member)).status_code == 200  # warm in the cache
    revoked = await harness.client.delete(f"/admin/keys/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert (await harness.client.get("/me", headers=as_member)).status_code == 401
    again = await harness.client.delete(f"/admin/keys/{key['id']}")  # idempotent, audited once
    assert again.status_code == 200
    missing = await harness.client.delete("/admin/keys/999999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"

    (event,) = [e for e in await events(harness, "key.revoked") if e.target_id == str(key["id"])]
    assert (event.actor_type, event.target_type) == ("key", "key")
    assert f'"user_id":{user_id}' in event.details and f'"prefix":"{key["prefix"]}"' in event.details
    created = [e for e in await events(harness, "key.created") if e.target_id == str(key["id"])]
    assert len(created) == 1 and created[0].actor_type == "key"
    async with harness.runtime.db.sessionmaker() as session:
        every = (await session.execute(select(AuditEvent.details))).scalars().all()
    assert not [d for d in every if key["key"] in d or ADMIN_KEY in d]


async def test_an_admin_cannot_revoke_a_superadmins_key(harness: Harness) -> None:
    _, (admin_key,) = await new_member(harness, "admin")
    _, (super_key,) = await new_member(harness, "superadmin")
    _, (user_key,) = await new_member(harness, "user")
    as_admin = harness.as_key(admin_key["key"])
    refused = await harness.client.delete(f"/admin/keys/{super_key['id']}", headers=as_admin)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "role_not_allowed"
    assert (await harness.client.get("/me", headers=harness.as_key(super_key["key"]))).status_code == 200
    assert (await harness.client.delete(f"/admin/keys/{user_key['id']}", headers=as_admin)).status_code == 200
    assert (await harness.client.delete(f"/admin/keys/{super_key['id']}")).status_code == 200  # as a superadmin
    user_view = await harness.client.get("/admin/keys", headers=harness.as_key(user_key["key"]))
    assert user_view.status_code == 401  # revoked above
    _, (monitor_key,) = await new_member(harness, "monitor")
    assert (await harness.client.get("/admin/keys", headers=harness.as_key(monitor_key["key"]))).status_code == 403


async def test_own_keys_and_bootstrap_key_creation_are_audited(harness: Harness) -> None:
    mine = await harness.client.post("/me/keys", json={"name": "laptop"})
    assert mine.status_code == 201
    assert (await harness.client.delete(f"/me/keys/{mine.json()['id']}")).status_code == 200
    created = {e.target_id: e for e in await events(harness, "key.created")}
    bootstrap = [e for e in created.values() if e.actor_type == "system"]
    assert len(bootstrap) == 1 and bootstrap[0].actor_label == "bootstrap"
    assert f'"name":"{BOOTSTRAP_KEY_NAME}"' in bootstrap[0].details
    laptop = created[str(mine.json()["id"])]
    assert laptop.actor_type == "key" and laptop.actor_id is not None
    assert [e.target_id for e in await events(harness, "key.revoked")] == [str(mine.json()["id"])]


async def cli(settings_env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the server in this process keeps running meanwhile (a blocked loop would keep any of
    its write transactions open, and the CLI would find the database locked)."""
    env = {**os.environ, **settings_env, "COLUMNS": "200"}
    command = [sys.executable, "-m", "gatehouse", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def new_key_in(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("new bootstrap key")]
    return line.rsplit(" ", 1)[1]


async def test_rotate_bootstrap_without_redis(harness: Harness, tmp_path: Path) -> None:
    env = {"DATABASE_URL": harness.settings.database_url, "BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL, "REDIS_URL": ""}
    assert (await harness.client.get("/me")).status_code == 200  # the old key is warm in this server's cache
    rotated = await cli(env, tmp_path, "keys", "rotate-bootstrap")
    assert rotated.returncode == 0, rotated.stderr
    new_key = new_key_in(rotated.stdout)
    assert new_key != ADMIN_KEY and "revoked 1 old bootstrap key" in rotated.stdout
    assert "AUTH_CACHE_SECONDS" in rotated.stdout
    assert (await harness.client.get("/me", headers=harness.as_key(new_key))).status_code == 200
    # Honestly: without Redis this server hears nothing, and serves the old key from its cache until it
    # expires (AUTH_CACHE_SECONDS) or the server restarts; a cold cache refuses it.
    assert (await harness.client.get("/me")).status_code == 200
    harness.runtime.auth.cache.clear()
    assert (await harness.client.get("/me")).status_code == 401

    listed = await cli(env, tmp_path, "keys", "list", "--user", ADMIN_EMAIL)
    assert listed.returncode == 0, listed.stderr
    assert new_key[:10] in listed.stdout and ADMIN_KEY[:10] in listed.stdout and "revoked" in listed.stdout
    assert new_key not in listed.stdout

    async with harness.runtime.db.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.actor_label == "cli"))).scalars().all()
    assert sorted(e.action for e in rows) == ["key.created", "key.revoked"]
    assert not [e for e in rows if new_key in e.details or ADMIN_KEY in e.details]

    nobody = await cli({**env, "BOOTSTRAP_ADMIN_EMAIL": "nobody@example.com"}, tmp_path, "keys", "rotate-bootstrap")
    assert nobody.returncode == 1 and "nobody@example.com" in nobody.stderr


@pytest.mark.redis
async def test_rotate_bootstrap_with_redis_refuses_the_old_key_at_once(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    settings = make_settings(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_key_prefix)
    async with running_app(settings) as harness:
        assert (await harness.client.get("/me")).status_code == 200  # warm
        env = {
            "DATABASE_URL": database_url,
            "BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": redis_key_prefix,
        }
        rotated = await cli(env, tmp_path, "keys", "rotate-bootstrap")
        assert rotated.returncode == 0, rotated.stderr
        assert "through Redis" in rotated.stdout
        new_key = new_key_in(rotated.stdout)
        # The event was published before the command exited; the server's subscriber handles it within a poll.
        deadline = time.monotonic() + 5
        while (status := (await harness.client.get("/me")).status_code) == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert status == 401
        assert (await harness.client.get("/me", headers=harness.as_key(new_key))).status_code == 200
