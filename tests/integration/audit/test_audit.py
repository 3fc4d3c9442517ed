"""The audit log: every change writes its event, filters return exactly the matching rows, and editing,
deleting or inserting a row directly in the database breaks the chain at that row."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from gatehouse.audit.chain import HASHED_FIELDS as HASHED
from gatehouse.audit.chain import row_hash
from gatehouse.audit.models import AuditEvent
from tests.conftest import Harness


async def _new_user(harness: Harness, email: str, role: str = "user") -> dict[str, Any]:
    response = await harness.client.post("/admin/users", json={"email": email, "role": role})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _events(harness: Harness, **params: Any) -> list[dict[str, Any]]:
    response = await harness.client.get("/admin/audit", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _cli(harness: Harness, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": harness.settings.database_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "gatehouse", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def test_changes_are_audited_with_before_and_after(harness: Harness) -> None:
    user = await _new_user(harness, "audited@example.com")
    uid = user["id"]
    await harness.client.patch(f"/admin/users/{uid}", json={"display_name": "Audited", "tokens_per_day": 500})
    await harness.client.patch(f"/admin/users/{uid}", json={"role": "monitor"})
    await harness.client.post(f"/admin/users/{uid}/disable")
    await harness.client.post(f"/admin/users/{uid}/enable")
    await harness.client.post(f"/admin/users/{uid}/block", json={"reason": "spam"})
    await harness.client.post(f"/admin/users/{uid}/unblock")
    await harness.client.put("/admin/rate-limits", json={"limits": {"chat": 7}})

    events = await _events(harness, target_type="user", target_id=str(uid))
    actions = [e["action"] for e in reversed(events)]
    assert actions == [
        "user.created",
        "user.updated",
        "user.quota_changed",
        "user.updated",
        "user.role_changed",
        "user.updated",
        "user.disabled",
        "user.updated",
        "user.enabled",
        "user.blocked",
        "user.unblocked",
    ]
    first_update = next(e for e in reversed(events) if e["action"] == "user.updated")
    assert first_update["details"]["changes"] == {
        "display_name": {"before": "audited", "after": "Audited"},
        "tokens_per_day": {"before": None, "after": 500},
    }
    assert all(e["actor_label"] == "admin@example.com" and e["actor_type"] == "key" for e in events)
    assert all(e["request_id"] for e in events)
    (limits,) = await _events(harness, action="rate_limit.changed")
    assert limits["details"]["changes"] == {"chat": {"before": None, "after": 7}}


async def test_filters_return_exactly_the_matching_rows(harness: Harness) -> None:
    a = await _new_user(harness, "fa@example.com")
    b = await _new_user(harness, "fb@example.com")
    await harness.client.patch(f"/admin/users/{a['id']}", json={"display_name": "A"})
    await harness.client.patch(f"/admin/users/{b['id']}", json={"display_name": "B"})
    async with harness.runtime.db.sessionmaker() as session:
        everything = (await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars().all()

    def expected(predicate: Any) -> list[int]:
        return sorted((e.id for e in everything if predicate(e)), reverse=True)

    assert [e["id"] for e in await _events(harness, action="user.updated")] == expected(
        lambda e: e.action == "user.updated"
    )
    assert [e["id"] for e in await _events(harness, action="user.")] == expected(lambda e: e.action.startswith("user."))
    assert [e["id"] for e in await _events(harness, target_type="user", target_id=str(b["id"]))] == expected(
        lambda e: e.target_type == "user" and e.target_id == str(b["id"])
    )
    admin_id = everything[-1].actor_id
    assert [e["id"] for e in await _events(harness, actor_id=admin_id)] == expected(lambda e: e.actor_id == admin_id)
    middle = everything[len(everything) // 2].created_at
    since = await _events(harness, since=middle.isoformat())
    assert [e["id"] for e in since] == expected(lambda e: e.created_at >= middle)
    until = await _events(harness, until=middle.isoformat())
    assert [e["id"] for e in until] == expected(lambda e: e.created_at < middle)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await _events(harness, since=future) == []
    # Cursor pagination walks every row exactly once.
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"before": cursor} if cursor else {})}
        page = (await harness.client.get("/admin/audit", params=params)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected(lambda e: True)
    naive = await harness.client.get("/admin/audit", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["error"]["param"] == "since"


async def _tamper(harness: Harness, statement: Any) -> None:
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        await session.execute(statement)


async def _make_events(harness: Harness, count: int) -> list[int]:
    for i in range(count):
        await _new_user(harness, f"chain{i}-{os.urandom(2).hex()}@example.com")
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.execute(select(AuditEvent.id).order_by(AuditEvent.id))).scalars())


async def test_verify_passes_on_an_intact_chain(harness: Harness, tmp_path: Path) -> None:
    await _make_events(harness, 3)
    result = _cli(harness, tmp_path, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")
    api = (await harness.client.get("/admin/audit/verify")).json()
    assert api["ok"] is True and api["checked"] >= 3
    tail = _cli(harness, tmp_path, "audit", "tail", "-n", "2")
    assert tail.returncode == 0 and tail.stdout.count("user.created") == 2


async def test_verify_names_an_edited_row(harness: Harness, tmp_path: Path) -> None:
    ids = await _make_events(harness, 4)
    await _tamper(harness, update(AuditEvent).where(AuditEvent.id == ids[1]).values(details='{"email":"x"}'))
    result = _cli(harness, tmp_path, "audit", "verify")
    assert result.returncode == 1
    assert f"BROKEN at audit event {ids[1]}" in result.stderr and "edited" in result.stderr


async def test_verify_names_the_row_after_a_deleted_one(harness: Harness, tmp_path: Path) -> None:
    ids = await _make_events(harness, 4)
    await _tamper(harness, delete(AuditEvent).where(AuditEvent.id == ids[1]))
    result = _cli(harness, tmp_path, "audit", "verify")
    assert result.returncode == 1
    assert f"BROKEN at audit event {ids[2]}" in result.stderr


async def test_verify_names_an_inserted_row_even_with_a_valid_hash(harness: Harness, tmp_path: Path) -> None:
    ids = await _make_events(harness, 2)
    async with harness.runtime.db.sessionmaker() as session:
        last = (await session.execute(select(AuditEvent).where(AuditEvent.id == ids[-1]))).scalar_one()
    fields = {
        "created_at": datetime.now(UTC),
        "actor_type": "user",
        "actor_id": 1,
        "actor_key_id": None,
        "actor_label": "forger",
        "client_ip": None,
        "action": "user.created",
        "target_type": "user",
        "target_id": "999",
        "details": "{}",
        "request_id": None,
    }
    # A forged row that chains correctly onto the last real one, then more real events after it.
    forged_id = ids[-1] + 50
    forged_hash = row_hash(last.hash, fields)
    await _tamper(harness, insert(AuditEvent).values(id=forged_id, prev_hash=last.hash, hash=forged_hash, **fields))
    await _make_events(harness, 1)
    result = _cli(harness, tmp_path, "audit", "verify")
    assert result.returncode == 1
    async with harness.runtime.db.sessionmaker() as session:
        after = (await session.execute(select(func.max(AuditEvent.id)))).scalar_one()
    assert f"BROKEN at audit event {after}" in result.stderr


async def test_verify_notices_rows_deleted_at_the_end(harness: Harness, tmp_path: Path) -> None:
    ids = await _make_events(harness, 3)
    await _tamper(harness, delete(AuditEvent).where(AuditEvent.id == ids[-1]))
    result = _cli(harness, tmp_path, "audit", "verify")
    assert result.returncode == 1
    assert f"BROKEN at audit event {ids[-1]}" in result.stderr and "end" in result.stderr


async def test_a_purge_that_records_its_anchor_leaves_the_rest_verifiable(harness: Harness, tmp_path: Path) -> None:
    """The design a retention purge will use: delete the oldest rows, then record (chained) the last hash removed."""
    from gatehouse.audit.events import AuditPurgedEvent
    from gatehouse.audit.service import record, verify_chain
    from gatehouse.auth.actor import Actor

    ids = await _make_events(harness, 4)
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        last_purged = (await session.execute(select(AuditEvent).where(AuditEvent.id == ids[1]))).scalar_one()
        anchor = last_purged.hash
        await session.execute(delete(AuditEvent).where(AuditEvent.id <= ids[1]))
        event = AuditPurgedEvent(last_purged_hash=anchor, last_purged_id=ids[1], purged=2, before=datetime.now(UTC))
        await record(session, event, actor=Actor.job("purge"))
    async with harness.runtime.db.sessionmaker() as session:
        assert (await verify_chain(session)).ok
    assert _cli(harness, tmp_path, "audit", "verify").returncode == 0
    # Without its anchor the same gap is a deletion.
    await _tamper(harness, delete(AuditEvent).where(AuditEvent.action == "audit.purged"))
    assert _cli(harness, tmp_path, "audit", "verify").returncode == 1


async def test_purge_before_removes_exactly_the_older_prefix_and_stays_verifiable(
    harness: Harness, tmp_path: Path
) -> None:
    from gatehouse.audit.service import purge_before, verify_chain
    from gatehouse.auth.actor import Actor

    ids = await _make_events(harness, 5)
    old, new = datetime.now(UTC) - timedelta(days=120), datetime.now(UTC) - timedelta(days=1)
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        # Backdate what came before the 4th event: those rows are past a 90-day retention, the rest are not.
        await session.execute(update(AuditEvent).where(AuditEvent.id < ids[3]).values(created_at=old))
        await session.execute(update(AuditEvent).where(AuditEvent.id >= ids[3]).values(created_at=new))
    # Backdating changed the rows' content: re-chain them so only the purge itself is under test.
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        previous = "0" * 64
        rows = (await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars().all()
        for row in rows:
            fields = {name: getattr(row, name) for name in HASHED}
            row.prev_hash, row.hash = previous, row_hash(previous, fields)
            previous = row.hash
        from gatehouse.audit.models import AuditHead

        head = await session.get(AuditHead, 1)
        assert head is not None
        head.last_id, head.last_hash = rows[-1].id, rows[-1].hash
    async with harness.runtime.db.sessionmaker() as session:
        assert (await verify_chain(session)).ok
        before = (await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one()
        older = (
            await session.execute(select(func.count()).select_from(AuditEvent).where(AuditEvent.id < ids[3]))
        ).scalar_one()

    cutoff = datetime.now(UTC) - timedelta(days=90)
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        purge = await purge_before(session, cutoff=cutoff, actor=Actor.job("purge"))
    assert purge.removed == older and purge.last_removed_id == ids[2]
    async with harness.runtime.db.sessionmaker() as session:
        remaining = (await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars().all()
        assert [r.id for r in remaining][: len(ids) - 3] == ids[3:]
        assert len(remaining) == before - older + 1  # plus the audit.purged record
        assert remaining[-1].action == "audit.purged"
        assert (await verify_chain(session)).ok
    assert _cli(harness, tmp_path, "audit", "verify").returncode == 0

    # Nothing more is past retention: a second purge removes nothing and records nothing.
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        again = await purge_before(session, cutoff=cutoff, actor=Actor.job("purge"))
    assert again.removed == 0
    # Any other deletion is still caught.
    await _tamper(harness, delete(AuditEvent).where(AuditEvent.id == ids[4]))
    assert _cli(harness, tmp_path, "audit", "verify").returncode == 1
