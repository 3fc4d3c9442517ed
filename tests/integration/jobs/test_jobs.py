"""The job runner: the purge removes exactly what is past retention, the job token guards the run route, a lock
and a slot make a job run once across replicas, and every run is recorded and audited (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from gatehouse.accounts.invites.models import Invite
from gatehouse.audit import service as audit_service
from gatehouse.audit.models import AuditEvent
from gatehouse.audit.service import append
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import UserSession
from gatehouse.cli import app as cli_app
from gatehouse.core.schedule import parse_schedule
from gatehouse.db.base import utcnow
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import upgrade
from gatehouse.gateway.models import RequestLog
from gatehouse.jobs.models import JobLock, JobRun
from gatehouse.jobs.runner import JobRunner
from gatehouse.monitoring.models import OpsSample
from gatehouse.runtime import job_definitions
from gatehouse.settings import Settings
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import create_member
from tests.support.request_log import log_row

JOB_TOKEN = "job-token-for-the-tests-0123456789"
DAY = timedelta(days=1)


async def _audit_at(
    sessionmaker: async_sessionmaker[AsyncSession], when: datetime, monkeypatch: pytest.MonkeyPatch, action: str
) -> int:
    """An audit event recorded as if at `when` (the chain is built as it would have been then)."""
    monkeypatch.setattr(audit_service, "utcnow", lambda: when)
    try:
        async with sessionmaker() as session, session.begin():
            event = await append(session, actor=Actor.system("test"), action=action)
            return event.id
    finally:
        monkeypatch.setattr(audit_service, "utcnow", utcnow)


async def _old_audit_events(settings: Settings, monkeypatch: pytest.MonkeyPatch, now: datetime) -> dict[str, Any]:
    """Before the app starts (the chain grows in time order, as in life): events on both sides of 90 days."""
    await upgrade(settings.database_url)
    engine = create_engine(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        cutoff = now - timedelta(days=90)
        old = [await _audit_at(sessionmaker, cutoff - DAY * (3 - i), monkeypatch, f"test.old{i}") for i in range(3)]
        old.append(await _audit_at(sessionmaker, cutoff - timedelta(minutes=5), monkeypatch, "test.old-boundary"))
        kept = await _audit_at(sessionmaker, cutoff + timedelta(minutes=5), monkeypatch, "test.kept")
    finally:
        await engine.dispose()
    return {"old_audit": old, "kept_audit": kept}


async def _seed(harness: Harness, now: datetime) -> None:
    """Rows on both sides of every other retention boundary (90 days for the request log)."""
    cutoff = now - timedelta(days=90)
    member = await create_member(harness)
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        for offset, request_id in ((-DAY, "old-1"), (-timedelta(minutes=1), "old-2"), (timedelta(minutes=1), "new-1")):
            session.add(RequestLog(**log_row(request_id=request_id), created_at=cutoff + offset))
        session.add(OpsSample(created_at=cutoff - DAY, replica="r", statements=1, statement_seconds=0.1))
        session.add(OpsSample(created_at=cutoff + DAY, replica="r", statements=1, statement_seconds=0.1))
        for token, expires in (("s-old", now - timedelta(seconds=5)), ("s-live", now + DAY)):
            session.add(UserSession(token_hash=token.ljust(64, "0"), user_id=member.id, expires_at=expires))
        for token, invite_expires in (("i-old", now - DAY), ("i-live", now + DAY), ("i-never", None)):
            session.add(Invite(token_hash=token.ljust(64, "0"), expires_at=invite_expires, role="user"))


async def test_purge_removes_exactly_what_is_past_retention_and_the_audit_log_still_verifies(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    settings = make_settings(database_url, tmp_path)
    seeded = await _old_audit_events(settings, monkeypatch, now)
    async with running_app(settings) as harness:
        await _purge_and_check(harness, seeded, now)


async def _purge_and_check(harness: Harness, seeded: dict[str, Any], now: datetime) -> None:
    await _seed(harness, now)
    async with harness.runtime.db.sessionmaker() as session:
        audit_before = (await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one()

    response = await harness.client.post("/admin/jobs/purge/run")
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "ok", run
    assert run["trigger"] == "api"
    counts = run["counts"]
    # The bootstrap events and the member's are recent: only the four old test events go.
    assert counts["audit_events"] == 4
    assert counts["request_log_rows"] == 2
    assert counts["ops_samples"] == 1
    assert counts["expired_sessions"] == 1
    assert counts["expired_invites"] == 1

    async with harness.runtime.db.sessionmaker() as session:
        ids = set((await session.execute(select(AuditEvent.id))).scalars())
        assert not ids & set(seeded["old_audit"])
        assert seeded["kept_audit"] in ids
        # -4 removed, +1 audit.purged, +1 job.run
        assert len(ids) == audit_before - 4 + 2
        requests = set((await session.execute(select(RequestLog.request_id))).scalars())
        assert requests == {"new-1"}
        assert (await session.execute(select(func.count()).select_from(OpsSample))).scalar_one() == 1
        sessions = set((await session.execute(select(UserSession.token_hash))).scalars())
        assert sessions == {"s-live".ljust(64, "0")}
        invites = set((await session.execute(select(Invite.token_hash))).scalars())
        assert invites == {"i-live".ljust(64, "0"), "i-never".ljust(64, "0")}
        job_event = (await session.execute(select(AuditEvent).where(AuditEvent.action == "job.finished"))).scalar_one()
        assert job_event.target_id == "purge"
        assert orjson.loads(job_event.details)["counts"]["audit_events"] == 4

    verified = await harness.client.get("/admin/audit/verify")
    assert verified.json()["ok"] is True, verified.json()
    metrics = (await harness.client.get("/metrics")).text
    assert 'gatehouse_job_runs_total{job_name="purge",status="ok"}' in metrics
    assert 'gatehouse_job_runs_total{job_name="backup",status="failed"}' in metrics
    assert 'gatehouse_job_last_success_timestamp_seconds{job_name="purge"}' in metrics
    assert 'gatehouse_job_scheduled_interval_seconds{job_name="backup"} 0.0' in metrics

    # Nothing is past retention any more: a second run removes nothing, and the chain still verifies.
    again = (await harness.client.post("/admin/jobs/purge/run")).json()
    assert again["counts"]["audit_events"] == 0
    assert again["counts"]["request_log_rows"] == 0
    assert (await harness.client.get("/admin/audit/verify")).json()["ok"] is True


async def test_zero_retention_keeps_everything(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, audit_retention_days=0, request_log_retention_days=0)
    async with running_app(settings) as harness:
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            session.add(RequestLog(**log_row(request_id="ancient"), created_at=utcnow() - timedelta(days=3650)))
        run = (await harness.client.post("/admin/jobs/purge/run")).json()
        assert run["status"] == "ok"
        assert "audit_events" not in run["counts"]
        assert "request_log_rows" not in run["counts"]
        async with harness.runtime.db.sessionmaker() as session:
            assert (await session.execute(select(func.count()).select_from(RequestLog))).scalar_one() == 1


async def test_the_run_route_needs_an_admin_or_the_right_job_token(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path, job_token=JOB_TOKEN)) as harness:
        anonymous = {"authorization": ""}
        refused = await harness.client.post("/admin/jobs/purge/run", headers=anonymous)
        assert refused.status_code == 401
        wrong = await harness.client.post("/admin/jobs/purge/run", headers={**anonymous, "x-job-token": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_token"
        # A wrong token is refused even next to an admin's key: the header was meant to be used.
        mixed = await harness.client.post("/admin/jobs/purge/run", headers={"x-job-token": JOB_TOKEN[:-1] + "x"})
        assert mixed.status_code == 401
        member = await create_member(harness)
        as_user = await harness.client.post("/admin/jobs/purge/run", headers=harness.as_key(member.key))
        assert as_user.status_code == 403
        async with harness.runtime.db.sessionmaker() as session:
            assert (await session.execute(select(func.count()).select_from(JobRun))).scalar_one() == 0

        ok = await harness.client.post("/admin/jobs/purge/run", headers={**anonymous, "x-job-token": JOB_TOKEN})
        assert ok.status_code == 200, ok.text
        assert ok.json()["trigger"] == "token"
        assert ok.json()["requested_by"] == "job-token"
        # A monitor may look, not run.
        monitor = await create_member(harness, "monitor")
        assert (await harness.client.get("/admin/jobs", headers=harness.as_key(monitor.key))).status_code == 200
        assert (
            await harness.client.post("/admin/jobs/purge/run", headers=harness.as_key(monitor.key))
        ).status_code == 403

    async with running_app(make_settings(database_url, tmp_path / "unset")) as harness:
        unset = await harness.client.post(
            "/admin/jobs/purge/run", headers={"authorization": "", "x-job-token": JOB_TOKEN}
        )
        assert unset.status_code == 401
        assert unset.json()["error"]["code"] == "token_not_configured"
        assert "JOB_TOKEN" in unset.json()["error"]["message"]


async def _runners(database_url: str, tmp_path: Path, count: int, **overrides: Any) -> list[tuple[JobRunner, Any]]:
    """`count` runners, as on `count` replicas: each with an engine (a connection pool) of its own."""
    settings = make_settings(database_url, tmp_path, **overrides)
    out = []
    for index in range(count):
        engine = create_engine(settings)
        runner = JobRunner(
            settings, create_sessionmaker(engine), replica=f"replica-{index}", jobs=job_definitions(settings)
        )
        out.append((runner, engine))
    return out


async def test_a_scheduled_slot_runs_once_whatever_the_number_of_replicas(harness: Harness, tmp_path: Path) -> None:
    runners = await _runners(harness.settings.database_url, tmp_path, 4)
    try:
        slot = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
        actor = Actor.job("purge")
        results = await asyncio.gather(
            *(runner.run("purge", trigger="schedule", actor=actor, slot=slot) for runner, _ in runners)
        )
        ran = [r for r in results if r is not None]
        assert len(ran) == 1, results
        # The same slot, later, from anyone: taken.
        assert await runners[2][0].run("purge", trigger="schedule", actor=actor, slot=slot) is None
        # The next slot runs (once).
        later = await asyncio.gather(
            *(runner.run("purge", trigger="schedule", actor=actor, slot=slot + DAY) for runner, _ in runners)
        )
        assert len([r for r in later if r is not None]) == 1
        async with harness.runtime.db.sessionmaker() as session:
            runs = (await session.execute(select(JobRun).order_by(JobRun.id))).scalars().all()
            assert [(r.job, r.trigger, r.status, r.slot) for r in runs] == [
                ("purge", "schedule", "ok", slot),
                ("purge", "schedule", "ok", slot + DAY),
            ]
            lock = await session.get(JobLock, "purge")
            assert lock is not None and lock.holder is None and lock.last_slot == slot + DAY
            audited = (
                await session.execute(select(func.count()).where(AuditEvent.action == "job.finished"))
            ).scalar_one()
            assert audited == 2
    finally:
        for _, engine in runners:
            await engine.dispose()


async def test_a_running_job_refuses_a_second_run_and_a_dead_holder_is_taken_over(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (first, first_engine), (second, second_engine) = await _runners(harness.settings.database_url, tmp_path, 2)
    try:
        gate = asyncio.Event()
        original = first.jobs["purge"].function

        async def slow(context: Any) -> dict[str, Any]:
            await gate.wait()
            return await original(context)

        monkeypatch.setitem(first.jobs, "purge", dataclasses.replace(first.jobs["purge"], function=slow))
        task = asyncio.create_task(first.run("purge", trigger="cli", actor=Actor.system("cli")))
        while True:  # until the run is recorded and holds the lock
            async with harness.runtime.db.sessionmaker() as session:
                if await first.holder(session, "purge") is not None:
                    break
            await asyncio.sleep(0.01)
        busy = await harness.client.post("/admin/jobs/purge/run")
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "job_running"
        assert "replica-0" in busy.json()["error"]["message"]
        listed = (await harness.client.get("/admin/jobs")).json()
        purge = next(j for j in listed["jobs"] if j["name"] == "purge")
        assert purge["running"]["replica"] == "replica-0"
        gate.set()
        assert (await task) is not None

        # A holder that dies mid-run (its lease runs out) does not block the job: the next run takes over and
        # the abandoned run is marked failed.
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            session.add(abandoned := JobRun(job="purge", trigger="cli", replica="dead", status="running", counts="{}"))
            await session.flush()
            past = utcnow() - timedelta(minutes=5)
            await session.execute(
                update(JobLock)
                .where(JobLock.name == "purge")
                .values(holder="dead", run_id=abandoned.id, acquired_at=past, expires_at=past)
            )
        taken = await second.run("purge", trigger="cli", actor=Actor.system("cli"))
        assert taken is not None and taken.status == "ok"
        async with harness.runtime.db.sessionmaker() as session:
            dead = await session.get(JobRun, abandoned.id)
            assert dead is not None and dead.status == "failed"
            assert "dead" in (dead.error or "")
    finally:
        await first_engine.dispose()
        await second_engine.dispose()


async def test_a_failing_job_is_recorded_and_audited_as_failed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("gatehouse.jobs.purge.purge", broken)
    run = (await harness.client.post("/admin/jobs/purge/run")).json()
    assert run["status"] == "failed"
    assert run["error"] == "RuntimeError: disk on fire"
    async with harness.runtime.db.sessionmaker() as session:
        event = (await session.execute(select(AuditEvent).where(AuditEvent.action == "job.finished"))).scalar_one()
        assert orjson.loads(event.details)["status"] == "failed"
        lock = await session.get(JobLock, "purge")
        assert lock is not None and lock.holder is None
    listed = (await harness.client.get("/admin/jobs")).json()
    purge = next(j for j in listed["jobs"] if j["name"] == "purge")
    assert purge["last_run"]["status"] == "failed"
    assert purge["running"] is None


async def test_schedules_record_the_first_slot_then_run_each_later_one(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, purge_schedule="every 1s")
    before = utcnow()
    async with running_app(settings) as harness:
        listed = (await harness.client.get("/admin/jobs")).json()
        purge = next(j for j in listed["jobs"] if j["name"] == "purge")
        assert purge["schedule"] == "every 1s"
        assert purge["next_run"] is not None
        assert [r["id"] for r in listed["replicas"]] == [harness.runtime.bus.origin]
        for _ in range(100):
            async with harness.runtime.db.sessionmaker() as session:
                runs = (await session.execute(select(JobRun).where(JobRun.trigger == "schedule"))).scalars().all()
            if len(runs) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(runs) >= 2
        slots = [r.slot for r in runs]
        assert len(set(slots)) == len(slots)
        # The slot current at start was only recorded (a new database has missed nothing): runs start after it.
        assert min(s for s in slots if s is not None) > parse_schedule("every 1s").latest(before)


async def test_run_without_waiting_answers_202_with_the_run(harness: Harness) -> None:
    response = await harness.client.post("/admin/jobs/purge/run", params={"wait": "false"})
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    for _ in range(100):
        page = (await harness.client.get("/admin/jobs/runs", params={"job": "purge"})).json()
        if page["items"][0]["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert page["items"][0]["id"] == run_id
    assert page["items"][0]["status"] == "ok"
    unknown = await harness.client.post("/admin/jobs/nope/run")
    assert unknown.status_code == 404
    assert "purge" in unknown.json()["error"]["message"]


async def test_cli_runs_and_lists_jobs(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", harness.settings.database_url)
    from gatehouse.settings import get_settings

    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = await asyncio.to_thread(runner.invoke, cli_app, ["jobs", "run", "purge"])
        assert result.exit_code == 0, result.output
        assert "purge ok" in result.output
        listed = await asyncio.to_thread(runner.invoke, cli_app, ["jobs", "list"])
        assert listed.exit_code == 0, listed.output
        assert "purge" in listed.output and "backup" in listed.output and "cli" in listed.output
        probe = await asyncio.to_thread(runner.invoke, cli_app, ["jobs", "run", "probe"])
        assert probe.exit_code == 1
        assert "POST /admin/jobs/probe/run" in probe.output
        unknown = await asyncio.to_thread(runner.invoke, cli_app, ["jobs", "run", "nope"])
        assert unknown.exit_code == 1
        assert "purge" in unknown.output
    finally:
        get_settings.cache_clear()
    async with harness.runtime.db.sessionmaker() as session:
        run = (await session.execute(select(JobRun).where(JobRun.trigger == "cli"))).scalars().first()
        assert run is not None and run.requested_by == "cli"


async def test_the_backup_job_backs_up_encrypted_and_a_restore_closes_the_run_it_caught(
    database_url: str, tmp_path: Path
) -> None:
    from gatehouse.backups.manifest import list_backups
    from gatehouse.backups.restore import restore_backup
    from gatehouse.backups.verify import verify_backup

    settings = make_settings(
        database_url, tmp_path, backup_dir=tmp_path / "backups", backup_key="a-backup-passphrase-for-tests"
    )
    async with running_app(settings) as harness:
        listed = (await harness.client.get("/admin/jobs")).json()
        backup_job = next(j for j in listed["jobs"] if j["name"] == "backup")
        assert backup_job["schedule"] is None
        assert "encrypted" in backup_job["description"]
        run = (await harness.client.post("/admin/jobs/backup/run")).json()
        assert run["status"] == "ok", run
        (manifest,) = await list_backups(settings)
        assert run["counts"]["name"] == manifest.name
        assert manifest.encrypted
        assert (await verify_backup(settings, manifest.name)).ok
    # The backup holds its own job run, still "running" in the copy: a restore says it did not end there.
    restored = await restore_backup(settings, manifest.name, force=False)
    assert restored.ok, restored.problems
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            (caught,) = (await session.execute(select(JobRun).where(JobRun.job == "backup"))).scalars().all()
            assert caught.status == "failed"
            assert manifest.name in (caught.error or "")
            lock = await session.get(JobLock, "backup")
            assert lock is not None and lock.holder is None
    finally:
        await engine.dispose()


async def test_a_large_audit_purge_goes_in_anchored_batches_and_still_verifies(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatehouse.jobs import scheduled as audit_purge

    monkeypatch.setattr(audit_purge, "AUDIT_BATCH", 3)
    now = utcnow()
    settings = make_settings(database_url, tmp_path)
    seeded = await _old_audit_events(settings, monkeypatch, now)
    async with running_app(settings) as harness:
        run = (await harness.client.post("/admin/jobs/purge/run")).json()
        assert run["counts"]["audit_events"] == 4
        async with harness.runtime.db.sessionmaker() as session:
            ids = set((await session.execute(select(AuditEvent.id))).scalars())
            anchors = (
                await session.execute(select(func.count()).where(AuditEvent.action == "audit.purged"))
            ).scalar_one()
        assert not ids & set(seeded["old_audit"])
        assert seeded["kept_audit"] in ids
        assert anchors == 2  # 3 + 1
        assert (await harness.client.get("/admin/audit/verify")).json()["ok"] is True
