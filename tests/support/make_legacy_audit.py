"""Write the audit log of a Gatehouse release, as JSON, for the upgrade test (tests/integration/audit/test_upgrade.py).

Drives a running release through its public HTTP API only (so it works on any release), doing one of every change
and security event that release audits, then reads its SQLite database's audit rows and chain head as they are
stored. `data/audit_log_0.1.0.json` was written this way from release 0.1.0 (commit 8e8eb19, migration 0005):

    git worktree add /tmp/old 8e8eb19 && cd /tmp/old && make install
    DATABASE_URL=sqlite:////tmp/old/gh.db BOOTSTRAP_ADMIN_API_KEY=gh_legacy_fixture_key_0123456789 \
        PURGE_SCHEDULE= .venv/bin/gatehouse serve --port 18765 &
    python tests/support/make_legacy_audit.py http://127.0.0.1:18765 gh_legacy_fixture_key_0123456789 \
        /tmp/old/gh.db tests/support/data/audit_log_0.1.0.json
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import UTC, datetime, timedelta

import httpx


def main(url: str, admin_key: str, database: str, output: str) -> None:
    admin = httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin_key}"}, timeout=30)
    anonymous = httpx.Client(base_url=url, timeout=30)

    def ok(response: httpx.Response) -> dict:
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json() if response.content else {}

    # Accounts: a user, changes of every kind, a block, a key created and revoked.
    alice = ok(admin.post("/admin/users", json={"email": "alice@example.com", "password": "alice-password-1"}))
    ok(admin.patch(f"/admin/users/{alice['id']}", json={"display_name": "Alice A.", "tokens_per_day": 50000}))
    ok(admin.patch(f"/admin/users/{alice['id']}", json={"role": "monitor"}))
    ok(admin.post(f"/admin/users/{alice['id']}/disable"))
    ok(admin.post(f"/admin/users/{alice['id']}/enable"))
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ok(admin.post(f"/admin/users/{alice['id']}/block", json={"reason": "ticket 42", "until": until}))
    ok(admin.post(f"/admin/users/{alice['id']}/unblock"))
    key = ok(admin.post(f"/admin/users/{alice['id']}/keys", json={"name": "laptop"}))
    ok(admin.delete(f"/admin/keys/{key['id']}"))

    # Sessions: a failed login, a login and a logout.
    assert anonymous.post("/auth/login", json={"email": "alice@example.com", "password": "wrong"}).status_code == 401
    login = anonymous.post("/auth/login", json={"email": "alice@example.com", "password": "alice-password-1"})
    csrf = ok(login)["csrf_token"]
    assert anonymous.post("/auth/logout", headers={"x-csrf-token": csrf}).status_code == 204

    # Invites: one redeemed at sign-up, one revoked.
    invite = ok(admin.post("/admin/invites", json={"email": "bob@example.com"}))
    bob = ok(
        anonymous.post(
            "/auth/signup", json={"email": "bob@example.com", "password": "bob-password-1", "invite": invite["token"]}
        )
    )
    spare = ok(admin.post("/admin/invites", json={}))
    ok(admin.delete(f"/admin/invites/{spare['id']}"))

    # Limits, upstreams (created unchecked, changed, overridden, cleared, deleted), a job run, an export.
    ok(admin.put("/admin/rate-limits", json={"limits": {"chat": 100}}))
    upstream = ok(
        admin.post(
            "/admin/upstreams",
            json={"name": "spare", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "skip_check": True},
        )
    )
    ok(admin.patch(f"/admin/upstreams/{upstream['id']}", json={"read_timeout": 60, "skip_check": True}))
    ok(admin.put(f"/admin/upstreams/{upstream['id']}/override", json={"state": "drain", "reason": "maintenance"}))
    ok(admin.delete(f"/admin/upstreams/{upstream['id']}/override"))
    assert admin.delete(f"/admin/upstreams/{upstream['id']}").status_code == 204
    ok(admin.post("/admin/jobs/purge/run"))
    exported = admin.post("/admin/export", json={"entities": ["users", "audit"]})
    assert exported.status_code == 200, exported.text

    # Deletion requests: one anonymised, one deleted.
    carol = ok(admin.post("/admin/users", json={"email": "carol@example.com"}))
    ok(admin.delete(f"/admin/users/{carol['id']}", params={"mode": "anonymise", "reason": "request 7"}))
    ok(admin.delete(f"/admin/users/{bob['id']}", params={"reason": "request 8"}))

    verified = ok(admin.get("/admin/audit/verify"))
    assert verified["ok"], verified

    connection = sqlite3.connect(database)
    connection.row_factory = sqlite3.Row
    events = [dict(row) for row in connection.execute("SELECT * FROM audit_event ORDER BY id")]
    head = dict(connection.execute("SELECT * FROM audit_head").fetchone())
    revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    version = httpx.get(url + "/api/version").json()["version"]
    with open(output, "w") as handle:
        json.dump(
            {"gatehouse_version": version, "revision": revision, "audit_event": events, "audit_head": head},
            handle,
            indent=1,
        )
        handle.write("\n")
    print(f"{len(events)} events, actions: {sorted({e['action'] for e in events})}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
