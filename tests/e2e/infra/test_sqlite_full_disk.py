"""SQLite on a full disk: DATA_DIR (the database file and its WAL) on an 8 MB tmpfs of the test's own, filled with a
file while six clients keep sending chats on four surfaces. Requests either succeed (and are counted) or are refused
with a 503 `storage_full` naming the disk, with Retry-After; an admin change is refused whole (its audit event with
it); the request-log writer keeps its rows until space returns. Once the filler is deleted, requests succeed again
without a restart; then nothing is lost (usage, request log and the fake upstream's ledger agree, nothing held), the
database passes PRAGMA integrity_check and the audit chain verifies. The figures are printed (`pytest -s`).

Needs root (mount -t tmpfs); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import write_config
from tests.e2e.infra.checks import Account, check_audit_chain, check_nothing_lost, new_account
from tests.e2e.infra.traffic import Answer, summary, traffic
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse

UPSTREAM_KEY = "upstream-secret-key"
DISK_SIZE = "8m"
REFUSALS_WANTED = 12
FULL_SECONDS = 1.5

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted at `path`, unmounted afterwards (lazily, should a process still hold a file)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """A file taking every free byte of `disk`."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


@dataclass
class Setup:
    disk: Path
    server: GatehouseServer
    upstream: FakeUpstream
    account: Account


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("sqlite-full-disk")
    with run_fake_upstream(api_key=UPSTREAM_KEY) as upstream, small_disk(workdir / "disk") as disk:
        env = base_env(
            f"sqlite+aiosqlite:///{disk}/gatehouse.db",
            disk,
            GATEHOUSE_CONFIG=str(write_config(workdir / "gatehouse.yaml", upstream.url)),
            RATE_LIMIT_PER_MINUTE="100000",
            REQUEST_LOG_FLUSH_SECONDS="0.2",
            SHUTDOWN_DRAIN_SECONDS="0",  # the teardown's stop: no proxy to drain from
            QUOTA_CHECKPOINT_SECONDS="0.5",
            BACKUP_DIR=str(workdir / "backups"),
        )
        with run_gatehouse(env, workdir=workdir, timeout=120) as server, server.client() as admin:
            yield Setup(disk, server, upstream, new_account(admin, "full-disk"))


def _check_refusals(answers: list[Answer], disk: Path) -> None:
    """Every answer is a 2xx or a 503 storage_full in its surface's shape, with Retry-After (Ollama's has only a
    message: it names the disk)."""
    for answer in answers:
        if answer.ok:
            continue
        assert answer.status == 503, (answer, summary(answers))
        assert answer.retry_after is not None, answer
        if answer.surface == "ollama":
            assert answer.code is not None and f"{disk} (DATA_DIR" in answer.code, answer
        else:
            assert answer.code == "storage_full", answer


def test_a_full_disk_refuses_cleanly_corrupts_nothing_and_recovers(setup: Setup) -> None:
    admin = setup.server.client()
    with traffic(setup.server.url, setup.account.key) as load:
        load.wait_for(lambda answers: sum(a.ok for a in answers) >= 20, "traffic flowing")
        filled_at = time.monotonic()
        filler = fill(setup.disk)

        def refused(answers: list[Answer]) -> bool:
            return sum(1 for a in answers if a.started >= filled_at and a.status == 503) >= REFUSALS_WANTED

        load.wait_for(refused, f"{REFUSALS_WANTED} requests refused on the full disk")
        # Full for a while: the request-log writer (every 0.2 s here) meets the full disk several times.
        load.wait_for(
            lambda answers: any(a.started >= filled_at + FULL_SECONDS and a.status == 503 for a in answers),
            f"requests still refused {FULL_SECONDS} s after the disk filled",
        )
        # An admin change and its audit event are one transaction: refused whole, or (when SQLite finds room in
        # pages it already has, as a WAL it reuses) made whole; never a change without its event.
        change = admin.post("/admin/users", json={"email": f"while-full-{time.time_ns()}@example.com"})
        print("admin change while the disk is full:", change.status_code)
        assert change.status_code in (201, 503), change.text
        if change.status_code == 503:
            error = change.json()["error"]
            assert error["code"] == "storage_full", error
            assert str(setup.disk) in error["message"], error
            assert change.headers["retry-after"]
        freed_at = time.monotonic()
        filler.unlink()

        def answered_again(answers: list[Answer]) -> bool:
            return sum(1 for a in answers if a.started >= freed_at and a.ok) >= 20

        load.wait_for(answered_again, "requests answered again once space returned")
    answers = list(load.answers)
    window = [a for a in answers if filled_at <= a.started < freed_at]
    recovered = min(a.ended for a in answers if a.started >= freed_at and a.ok) - freed_at
    print(
        "full disk:",
        {
            "full_s": round(freed_at - filled_at, 2),
            "requests_while_full": len(window),
            "refused_503": sum(1 for a in window if a.status == 503),
            "first_2xx_after_s": round(recovered, 2),
        },
        summary(window),
    )
    print("all:", len(answers), summary(answers))
    _check_refusals(answers, setup.disk)
    assert setup.server.process.poll() is None, "Gatehouse was never restarted"
    # The request-log writer kept its rows while the disk was full (retried, none dropped), and nothing was a 500.
    log = setup.server.log_text()
    assert "request_log_flush_failed" in log, "the request-log writer never met the full disk"
    assert "unhandled_error" not in log and "request_log_rows_dropped" not in log
    check_nothing_lost(admin, setup.account, answers, setup.upstream)
    check_audit_chain(admin)
    assert admin.post("/admin/users", json={"email": f"after-{time.time_ns()}@example.com"}).status_code == 201
    with contextlib.closing(sqlite3.connect(f"file:{setup.disk}/gatehouse.db?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    admin.close()
