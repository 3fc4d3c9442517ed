"""Backups on SQLite and PostgreSQL: consistent under write load, verified end to end, pruned, restored safely."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, insert, select
from typer.testing import CliRunner, Result

from gatehouse.audit.service import AuditFilter, list_events, verify_chain
from gatehouse.auth.models import User
from gatehouse.backups.create import create_backup
from gatehouse.backups.manifest import get_backup, inventory, list_backups
from gatehouse.backups.restore import restore_backup
from gatehouse.backups.verify import verify_backup
from gatehouse.cli import app as cli_app
from gatehouse.db.base import utcnow
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import current_revisions, head_revisions, upgrade
from gatehouse.errors import BadRequest, Conflict, GatehouseError, NotFound
from gatehouse.jobs.models import JobRun, ReplicaBeat
from gatehouse.monitoring.models import OpsSample
from gatehouse.settings import Settings, get_settings
from tests.conftest import fresh_database, make_settings, running_app

KEY = "backup-key-for-tests-0123456789"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", backup_dir=tmp_path / "backups", backup_key=KEY)


def _kind(settings: Settings) -> str:
    return "sqlite" if settings.is_sqlite else "postgres"


async def _counts(settings: Settings) -> dict[str, int]:
    """Rows per table of the database, as the manifest records them."""
    from gatehouse.backups import postgres, sqlite

    if settings.is_sqlite:
        path = sqlite.sqlite_path(settings.database_url)
        return (await asyncio.to_thread(sqlite.sqlite_counts, path)).rows
    return (await postgres.pg_counts(settings.database_url)).rows


async def _bulk(settings: Settings, rows: int) -> None:
    """Enough data (about 1 KiB a row) that copying it takes several steps."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(JobRun),
                [{"job": "bulk", "trigger": "cli", "replica": "test", "error": "x" * 1000} for _ in range(rows)],
            )
    finally:
        await engine.dispose()


def _files(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.backup_dir.iterdir())


async def test_a_backup_taken_under_write_load_restores_to_exactly_its_manifest(
    settings: Settings, tmp_path: Path
) -> None:
    await upgrade(settings.database_url)
    await _bulk(settings, 4000)
    engine = create_engine(settings)
    written = 0
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal written
        while not stop.is_set():
            async with engine.begin() as conn:
                await conn.execute(insert(OpsSample).values(replica="load", statements=written, statement_seconds=0.0))
            written += 1

    async def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while written < count:
            assert time.monotonic() < deadline, "the writer stalled"
            await asyncio.sleep(0.01)

    seen_in_copy: list[int] = []

    def progress(done: int, total: int | None) -> None:
        seen_in_copy.append(written)
        # SQLite copies in a worker thread: hold the copy open a moment so the writer commits in the middle of
        # it (PostgreSQL's pg_dump runs alongside the event loop, so the writer keeps going by itself).
        if len(seen_in_copy) == 1 and threading.current_thread() is not threading.main_thread():
            until = written + 10
            deadline = time.monotonic() + 10
            while written < until and time.monotonic() < deadline:
                time.sleep(0.005)

    task = asyncio.create_task(writer())
    try:
        await wait_for(10)
        before = written
        manifest = await create_backup(settings, encrypt=True, progress=progress)
        after = written
        await wait_for(after + 10)
    finally:
        stop.set()
        await task
        await engine.dispose()

    assert after > before, "no write went through while the backup ran"
    assert before <= manifest.rows["ops_sample"] <= after
    assert manifest.rows["ops_sample"] < written  # rows written afterwards are not in it
    assert manifest.rows["job_run"] == 4000
    assert manifest.revision == head_revisions()
    assert manifest.encrypted and manifest.kind == "regular" and manifest.database in ("sqlite", "postgresql")

    verified = await verify_backup(settings, manifest.name)
    assert verified.ok, verified.problems
    assert verified.rows == manifest.total_rows

    # Onto a new, empty database (a new host): nothing to keep, so no safety backup.
    (tmp_path / "elsewhere").mkdir()
    with fresh_database(_kind(settings), tmp_path / "elsewhere") as other_url:
        other = make_settings(other_url, tmp_path / "data2", backup_dir=settings.backup_dir, backup_key=KEY)
        result = await restore_backup(other, manifest.name, force=False)
        assert result.ok, result.problems
        assert result.safety_backup is None
        restored = await _counts(other)
    # The restore is recorded in the restored audit log (one event, and the chain's head row created for it).
    assert restored == {**manifest.rows, "replica": 0, "audit_event": 1, "audit_head": 1}


async def test_verify_catches_a_damaged_file_a_truncated_one_and_a_wrong_key(settings: Settings) -> None:
    settings = settings.model_copy(update={"backup_keep": 10})
    await upgrade(settings.database_url)
    await _bulk(settings, 50)
    flipped = await create_backup(settings, encrypt=False)
    truncated = await create_backup(settings, encrypt=True)
    edited = await create_backup(settings, encrypt=False)
    for made in (flipped, truncated, edited):
        assert (await verify_backup(settings, made.name)).ok

    path = settings.backup_dir / flipped.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = await verify_backup(settings, flipped.name)
    assert not result.ok
    assert result.problems == ("its file's SHA-256 does not match the manifest: the file is corrupted",)

    path = settings.backup_dir / truncated.file
    path.write_bytes(path.read_bytes()[: truncated.size - 100])
    result = await verify_backup(settings, truncated.name)
    assert not result.ok
    assert "truncated" in result.problems[0] and str(truncated.size) in result.problems[0]

    # The manifest says one more row than the backup holds: the restored copy does not match it.
    manifest_path = settings.backup_dir / f"{edited.name}.json"
    rows = {**edited.rows, "job_run": edited.rows["job_run"] + 1}
    manifest_path.write_text(dataclasses.replace(edited, rows=rows).to_json())
    result = await verify_backup(settings, edited.name)
    assert result.problems == ("table job_run has 50 rows, the manifest says 51",)

    # Damage from before the checksum was taken (the manifest matches the file): the restore itself finds it,
    # and a restore of it changes nothing.
    cut = await create_backup(settings, encrypt=False)
    path = settings.backup_dir / cut.file
    path.write_bytes(path.read_bytes()[: cut.size // 2])
    size, sha = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    (settings.backup_dir / f"{cut.name}.json").write_text(dataclasses.replace(cut, size=size, sha256=sha).to_json())
    result = await verify_backup(settings, cut.name)
    assert not result.ok
    assert any(word in result.problems[0] for word in ("integrity", "not a readable", "does not restore"))
    before = await _counts(settings)
    with pytest.raises(GatehouseError):
        await restore_backup(settings, cut.name, force=False)
    assert await _counts(settings) == before

    intact = await create_backup(settings, encrypt=True)
    wrong_key = settings.model_copy(update={"backup_key": SecretStr("another-key-0123456789")})
    result = await verify_backup(wrong_key, intact.name)
    assert result.problems == ("it cannot be decrypted: BACKUP_KEY is not the key it was encrypted with",)
    assert (await verify_backup(settings, intact.name)).ok

    # A damaged backup is refused before anything changes.
    with pytest.raises(BadRequest, match=r"truncated\. Nothing was changed"):
        await restore_backup(settings, truncated.name, force=False)
    with pytest.raises(BadRequest, match="not the key"):
        await restore_backup(wrong_key, intact.name, force=False)
    assert not [m for m in await list_backups(settings) if m.kind == "safety"]


async def test_only_the_newest_backup_keep_generations_remain(settings: Settings) -> None:
    await upgrade(settings.database_url)
    keep = settings.model_copy(update={"backup_keep": 2})
    safety = await create_backup(keep, encrypt=False, kind="safety")
    made = [await create_backup(keep, encrypt=i % 2 == 0) for i in range(4)]
    assert len({m.name for m in made}) == 4  # unique even within one second
    listed = await list_backups(keep)
    assert [m.name for m in listed if m.kind == "regular"] == [made[3].name, made[2].name]
    assert [m.name for m in listed if m.kind == "safety"] == [safety.name]  # counted apart
    expected = sorted(f for m in (made[3], made[2], safety) for f in (m.file, f"{m.name}.json"))
    assert _files(keep) == expected
    assert all((keep.backup_dir / f).stat().st_mode & 0o777 == 0o600 for f in expected)


async def test_restore_refuses_while_serving_and_with_force_keeps_a_safety_backup(settings: Settings) -> None:
    async with running_app(settings) as harness:
        # Taken in the serving app's event loop, as the scheduled job does.
        manifest = await create_backup(settings, encrypt=True)
        late = await harness.client.post("/admin/users", json={"email": "late@example.com", "role": "user"})
        assert late.status_code == 201, late.text

        with pytest.raises(Conflict) as refused:
            await restore_backup(settings, manifest.name, force=False)
        assert f"{socket.gethostname()} pid {os.getpid()}" in refused.value.message
        assert "--force" in refused.value.message

        result = await restore_backup(settings, manifest.name, force=True)
        assert result.serving and result.safety_backup
        assert result.revision == head_revisions()

    backups = {m.name: m for m in await list_backups(settings)}
    safety = backups[result.safety_backup]
    assert safety.kind == "safety" and safety.encrypted
    assert safety.rows["user_account"] == manifest.rows["user_account"] + 1  # it holds what the restore replaced

    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            late_users = await conn.scalar(select(func.count()).where(User.email == "late@example.com"))
            users = await conn.scalar(select(func.count()).select_from(User))
        assert late_users == 0
        assert users == manifest.rows["user_account"]
        assert await current_revisions(engine) == head_revisions()
        # The restore is audited in the restored log, whose chain it continues.
        async with create_sessionmaker(engine)() as session:
            assert (await verify_chain(session)).ok
            newest = (await list_events(session, where=AuditFilter(), limit=1))[0]
        assert (newest.action, newest.target_id) == ("backup.restored", manifest.name)
        assert json.loads(newest.details)["safety_backup"] == result.safety_backup
    finally:
        await engine.dispose()

    # And back again, from the safety backup (nothing serves now).
    back = await restore_backup(settings, safety.name, force=False)
    assert back.ok, back.problems
    assert not back.serving


async def test_unknown_names_and_a_missing_key_are_explained(settings: Settings) -> None:
    await upgrade(settings.database_url)
    with pytest.raises(NotFound, match="No backup named gatehouse-nope"):
        await get_backup(settings, "gatehouse-nope")
    with pytest.raises(BadRequest, match="not a backup name"):
        await verify_backup(settings, "../etc/passwd")
    no_key = settings.model_copy(update={"backup_key": SecretStr("")})
    with pytest.raises(BadRequest, match="BACKUP_KEY is not set"):
        await create_backup(no_key, encrypt=True)
    short = settings.model_copy(update={"backup_key": SecretStr("short")})
    with pytest.raises(BadRequest, match="BACKUP_KEY is 5 characters"):
        await create_backup(short, encrypt=True)
    sealed = await create_backup(settings, encrypt=True)
    with pytest.raises(BadRequest, match="BACKUP_KEY is not set"):
        await verify_backup(no_key, sealed.name)
    assert [p.name for p in settings.backup_dir.iterdir() if p.name.startswith(".")] == []  # no leftovers


# --- damaged backups ---------------------------------------------------------------------------------------


def _break_json(directory: Path, name: str) -> None:
    (directory / f"{name}.json").write_text('{"format": 1, "name": ')


def _truncate_json(directory: Path, name: str) -> None:
    path = directory / f"{name}.json"
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def _delete_json(directory: Path, name: str) -> None:
    (directory / f"{name}.json").unlink()


def _wrong_fields(directory: Path, name: str) -> None:
    path = directory / f"{name}.json"
    data = json.loads(path.read_text())
    data["rows"] = "many"
    del data["sha256"]
    path.write_text(json.dumps(data))


# What each damage does to a backup, and what `gatehouse backup list` and `verify` then say is wrong.
DAMAGE = {
    "invalid JSON": (_break_json, "is not valid JSON (Expecting value at line 1, column 23)"),
    "truncated": (_truncate_json, "is not valid JSON ("),
    "deleted": (_delete_json, "is missing: the backup never finished, or the manifest was deleted"),
    "wrong fields": (_wrong_fields, "lacks sha256"),
}


async def test_a_damaged_backup_is_listed_refused_and_never_counted_as_a_generation(settings: Settings) -> None:
    keep = settings.model_copy(update={"backup_keep": 2})
    await upgrade(settings.database_url)
    good = await create_backup(keep, encrypt=True)
    damaged = []
    for damage, (make, _) in DAMAGE.items():
        made = await create_backup(keep, encrypt=damage == "truncated")
        make(keep.backup_dir, made.name)
        damaged.append(made.name)
    cut = await create_backup(keep, encrypt=False)  # a file cut short is damage seen without reading it
    (keep.backup_dir / cut.file).write_bytes((keep.backup_dir / cut.file).read_bytes()[:1000])
    damaged.append(cut.name)

    found = await inventory(keep)
    # Four damaged backups came after it, and BACKUP_KEEP is 2: the intact one is still there.
    assert [m.name for m in found.intact] == [good.name]
    assert [d.name for d in found.damaged] == damaged[::-1]
    for (_, problem), backup in zip(DAMAGE.values(), found.damaged[::-1], strict=False):
        assert backup.problem.startswith(f"its manifest {backup.name}.json "), backup.problem
        assert problem in backup.problem, backup.problem
    assert (
        found.damaged[0].problem == f"its file {cut.file} is 1000 bytes, the manifest says {cut.size}: it is truncated"
    )
    assert [b.name for b in found.newest_first()] == [*damaged[::-1], good.name]
    assert [m.name for m in await list_backups(keep)] == [good.name]

    for name in damaged:
        result = await verify_backup(keep, name)
        assert not result.ok and result.name == name
        (problem,) = result.problems
        assert name in problem
        before = await _counts(keep)
        with pytest.raises(BadRequest, match=rf"^Backup {name} is damaged: its (manifest|file) .*Nothing was changed"):
            await restore_backup(keep, name, force=False)
        assert await _counts(keep) == before
    assert (await verify_backup(keep, good.name)).ok
    with pytest.raises(BadRequest, match="is damaged: its manifest"):
        await get_backup(keep, damaged[0])

    # Later backups prune intact ones only: the damaged stay until a person moves them away.
    newer = [await create_backup(keep, encrypt=False) for _ in range(3)]
    found = await inventory(keep)
    assert [m.name for m in found.intact] == [newer[2].name, newer[1].name]
    assert [d.name for d in found.damaged] == damaged[::-1]


async def test_the_backup_job_fails_while_a_damaged_backup_is_there_and_its_metrics_say_so(settings: Settings) -> None:
    failed = 'gatehouse_job_runs_total{job_name="backup",status="failed"}'

    def value(metrics: str, series: str) -> float:
        return float(next(line for line in metrics.splitlines() if line.startswith(series + " ")).split()[-1])

    async with running_app(settings) as harness:
        broken = await create_backup(settings, encrypt=False)
        _truncate_json(settings.backup_dir, broken.name)
        before = value((await harness.client.get("/metrics")).text, failed)

        run = (await harness.client.post("/admin/jobs/backup/run")).json()
        assert run["status"] == "failed", run
        assert run["error"].startswith("DamagedBackupsFound: backup gatehouse-"), run["error"]
        assert f"1 backup(s) in {settings.backup_dir} are damaged" in run["error"]
        assert f"{broken.name}: its manifest {broken.name}.json is not valid JSON" in run["error"]
        assert value((await harness.client.get("/metrics")).text, failed) == before + 1
        jobs = (await harness.client.get("/admin/jobs")).json()["jobs"]
        last = next(job for job in jobs if job["name"] == "backup")["last_run"]
        assert last["status"] == "failed" and broken.name in last["error"]

        # The backup itself was taken, and is intact: only the damaged one is wrong.
        (taken,) = (await inventory(settings)).intact
        assert (await verify_backup(settings, taken.name)).ok


# --- the CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Iterator[Path]:
    """The CLI's settings from this test's environment only; the backup directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("BACKUP_KEY", KEY)
    get_settings.cache_clear()
    yield tmp_path / "backups"
    get_settings.cache_clear()


def gatehouse(*args: str, input: str | None = None) -> Result:
    get_settings.cache_clear()
    result = CliRunner().invoke(cli_app, list(args), input=input)
    assert KEY not in result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    return result


def test_cli_create_list_verify_restore(environment: Path) -> None:
    assert gatehouse("backup", "verify").exit_code == 1  # nothing to verify yet
    assert gatehouse("db", "upgrade").exit_code == 0
    created = gatehouse("backup", "create", "--encrypt")
    assert created.exit_code == 0, created.output
    name = created.stdout.split()[2].rstrip(":")
    assert name.startswith("gatehouse-") and "encrypted" in created.stdout

    listed = gatehouse("backup", "list")
    assert listed.exit_code == 0 and name in listed.stdout and "regular" in listed.stdout

    verified = gatehouse("backup", "verify")
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith(f"OK: {name} restores")

    plain = environment.parent / "plain-copy"
    decrypted = gatehouse("backup", "decrypt", name, "--output", str(plain))
    assert decrypted.exit_code == 0, decrypted.output
    manifest = json.loads((environment / f"{name}.json").read_text())
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == manifest["plaintext_sha256"]
    assert plain.stat().st_mode & 0o777 == 0o600
    again = gatehouse("backup", "decrypt", name, "--output", str(plain))
    assert again.exit_code == 1 and "exists" in again.stderr

    assert gatehouse("users", "create", "--email", "late@example.com").exit_code == 0
    declined = gatehouse("backup", "restore", name, input="n\n")
    assert declined.exit_code == 1 and "Replace all data" in declined.stdout

    restored = gatehouse("backup", "restore", name, "--yes")
    assert restored.exit_code == 0, restored.output
    assert "Safety backup of the data replaced: gatehouse-" in restored.stdout
    assert f"Restored {name}" in restored.stdout
    assert gatehouse("users", "create", "--email", "late@example.com").exit_code == 0  # it was gone

    # A process serving the database (its heartbeat is fresh): refused in one line, before any prompt.
    async def beat() -> None:
        engine = create_engine(get_settings())
        try:
            async with engine.begin() as conn:
                now = utcnow()
                row = {"id": "r1", "host": "web-1", "pid": 4242, "version": "0", "started_at": now, "seen_at": now}
                await conn.execute(insert(ReplicaBeat).values(**row))
        finally:
            await engine.dispose()

    asyncio.run(beat())
    refused = gatehouse("backup", "restore", name)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: Gatehouse is serving this database (web-1 pid 4242")
    forced = gatehouse("backup", "restore", name, "--force", "--yes")
    assert forced.exit_code == 0, forced.output
    assert "restart web-1 pid 4242" in forced.stderr

    damaged = environment / f"{name}.json"
    damaged.write_text(damaged.read_text().replace('"size": ', '"size": 1'))
    failed = gatehouse("backup", "verify", name)
    assert failed.exit_code == 1
    assert f"FAILED: {name}" in failed.stderr and "manifest says 1" in failed.stderr
    missing = gatehouse("backup", "restore", "gatehouse-20000101T000000Z", "--yes")
    assert missing.exit_code == 1 and "No backup named" in missing.stderr


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_cli_list_and_verify_name_a_damaged_backup_and_the_job_fails_on_it(environment: Path, damage: str) -> None:
    assert gatehouse("db", "upgrade").exit_code == 0
    good = gatehouse("backup", "create").stdout.split()[2].rstrip(":")
    broken = gatehouse("backup", "create", "--encrypt").stdout.split()[2].rstrip(":")
    make, problem = DAMAGE[damage]
    make(environment, broken)

    listed = gatehouse("backup", "list")
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines() if "  gatehouse-" in line}
    assert rows[broken][-1] == "DAMAGED" and rows[good][-1] == "ok"
    assert "1 damaged" in listed.stdout
    assert f"  {broken}: its manifest {broken}.json " in listed.stdout and problem in listed.stdout

    newest = gatehouse("backup", "verify")
    assert newest.exit_code == 1
    assert newest.stdout == ""
    assert newest.stderr.startswith(f"FAILED: {broken}\n  - its manifest {broken}.json "), newest.stderr
    assert problem in newest.stderr
    named = gatehouse("backup", "verify", broken)
    assert named.exit_code == 1 and named.stderr == newest.stderr
    earlier = gatehouse("backup", "verify", good)
    assert earlier.exit_code == 0, earlier.output
    assert earlier.stdout.startswith(f"OK: {good} restores")

    refused = gatehouse("backup", "restore", broken, "--yes")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: Backup {broken} is damaged: its manifest {broken}.json "), refused.stderr
    assert "Nothing was changed" in refused.stderr and "Replace all data" not in refused.stdout

    # The backup job takes its backup, then fails while a damaged one is there, naming it.
    job = gatehouse("jobs", "run", "backup")
    assert job.exit_code == 1
    assert "backup failed" in job.stderr and f"{broken}: its manifest {broken}.json" in job.stderr
    found = asyncio.run(inventory(get_settings()))
    assert len(found.intact) == 2 and [d.name for d in found.damaged] == [broken]
    newest = gatehouse("backup", "verify")  # the job's backup, intact; the damaged one is still pointed out
    assert newest.exit_code == 0, newest.output
    assert newest.stdout.startswith(f"OK: {found.intact[0].name} restores")
    assert newest.stderr.startswith(f"Also damaged: {broken}")

    # Moved away (as the RUNBOOK says): the job succeeds again.
    for path in environment.glob(f"{broken}.*"):
        path.rename(environment.parent / path.name)
    assert gatehouse("jobs", "run", "backup").exit_code == 0


def test_cli_never_shows_the_database_password(environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://gatehouse:s3cret-pw@127.0.0.1:1/nowhere")
    for command in (["backup", "create"], ["backup", "list"]):
        result = gatehouse(*command)
        assert result.exit_code in (0, 1)
        assert "s3cret-pw" not in result.output + result.stderr
