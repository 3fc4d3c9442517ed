"""An audit log written by the previous release (0.1.0) upgrades, verifies, is found under the current action names
and goes on growing: on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, text

from gatehouse.audit.events import LEGACY_ACTIONS
from gatehouse.audit.models import AuditEvent, AuditHead
from gatehouse.audit.service import AuditFilter, list_events, verify_chain
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import current_revisions, head_revisions, upgrade
from tests.conftest import make_settings, running_app

LEGACY = json.loads((Path(__file__).parents[2] / "support" / "data" / "audit_log_0.1.0.json").read_text())


def _row(stored: dict[str, Any]) -> dict[str, Any]:
    """A row as the old release stored it (SQLite kept its times naive, in UTC)."""
    created = datetime.fromisoformat(stored["created_at"]).replace(tzinfo=UTC)
    return {**stored, "created_at": created}


async def _load_legacy(database_url: str) -> None:
    """A database at the old release's migration head holding its audit log, row for row."""
    await upgrade(database_url, LEGACY["revision"])
    engine = create_engine(make_settings(database_url, Path(".")))
    try:
        assert await current_revisions(engine) == (LEGACY["revision"],)
        async with engine.begin() as conn:
            await conn.execute(insert(AuditEvent), [_row(e) for e in LEGACY["audit_event"]])
            await conn.execute(delete(AuditHead))  # the migration made an empty head: the old one replaces it
            await conn.execute(insert(AuditHead), [LEGACY["audit_head"]])
            if conn.dialect.name == "postgresql":  # ids were given: move the sequence on, as the old inserts did
                await conn.execute(
                    text("SELECT setval(pg_get_serial_sequence('audit_event', 'id'), max(id)) FROM audit_event")
                )
    finally:
        await engine.dispose()


async def test_an_old_audit_log_verifies_after_the_upgrade(database_url: str, tmp_path: Path) -> None:
    await _load_legacy(database_url)
    await upgrade(database_url)
    settings = make_settings(database_url, tmp_path)
    engine = create_engine(settings)
    try:
        assert set(await current_revisions(engine)) == set(head_revisions())
        async with create_sessionmaker(engine)() as session:
            result = await verify_chain(session)
            assert result.ok, result.broken
            assert result.checked == len(LEGACY["audit_event"])
            # Stored under its old name, each legacy event is found under its current one, and under the old.
            stored = {e["action"] for e in LEGACY["audit_event"]}
            for old, new in LEGACY_ACTIONS.items():
                assert old in stored, f"the fixture should hold a {old} event"
                for name in (old, new):
                    found = await list_events(session, where=AuditFilter(action=name), limit=100)
                    assert {e.action for e in found} == {old}, name
            signed_up = await list_events(session, where=AuditFilter(action="user."), limit=1000)
            assert "signup" in {e.action for e in signed_up}
    finally:
        await engine.dispose()


async def test_the_upgraded_log_goes_on_growing_and_still_verifies(database_url: str, tmp_path: Path) -> None:
    await _load_legacy(database_url)
    async with running_app(make_settings(database_url, tmp_path)) as harness:  # migrates to head at start
        client = harness.client
        created = await client.post("/admin/invites", json={"email": "newcomer@example.com"})
        assert created.status_code == 201, created.text
        signup = {"email": "newcomer@example.com", "password": "newcomer-password", "invite": created.json()["token"]}
        assert (await client.post("/auth/signup", json=signup, headers={"authorization": ""})).status_code == 201
        verified = (await client.get("/admin/audit/verify")).json()
        assert verified["ok"], verified
        assert verified["checked"] > len(LEGACY["audit_event"])
        # The old release's `signup` and this one's `user.signed_up`, under either name.
        for name in ("user.signed_up", "signup"):
            page = (await client.get("/admin/audit", params={"action": name})).json()
            assert sorted(e["action"] for e in page["items"]) == ["signup", "user.signed_up"], name
