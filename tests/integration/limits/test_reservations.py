"""Reservations that survive their replica: recovered once the replica is gone (stale heartbeat, or a pid that no
longer runs on this host), exactly once however many replicas try, never settled twice, and a replica that finds
its reservation recovered stops the request. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from gatehouse.db.base import utcnow
from gatehouse.jobs.models import ReplicaBeat
from gatehouse.jobs.replicas import host_identity
from gatehouse.limits.models import QuotaReservation, UsageCounter
from gatehouse.limits.quotas import Quotas
from gatehouse.limits.recovery import charged_tokens, reconcile, recover
from gatehouse.limits.usage import reset_usage
from tests.conftest import Harness

QUOTA = 10_000


async def _user(harness: Harness) -> int:
    user = (await harness.client.post("/admin/users", json={"email": f"r-{os.urandom(4).hex()}@example.com"})).json()
    response = await harness.client.patch(f"/admin/users/{user['id']}", json={"tokens_per_day": QUOTA})
    assert response.status_code == 200
    return int(user["id"])


def _quotas(harness: Harness, replica: str) -> Quotas:
    return Quotas(harness.runtime.statements, replica=replica, timezone="UTC", wait_seconds=0, checkpoint_seconds=60)


async def _beat(harness: Harness, replica: str, *, age: float, host_id: str = "elsewhere", pid: int = 1) -> None:
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        seen = utcnow() - timedelta(seconds=age)
        session.add(
            ReplicaBeat(
                id=replica,
                host="other-host",
                host_id=host_id,
                pid=pid,
                version="test",
                started_at=seen,
                seen_at=seen,
                heartbeat_seconds=1.0,
            )
        )


async def _counter(harness: Harness, user_id: int) -> tuple[int, int]:
    async with harness.runtime.db.sessionmaker() as session:
        row = (await session.execute(select(UsageCounter).where(UsageCounter.user_id == user_id))).scalar_one()
        return row.tokens, row.reserved_tokens


async def _reservations(harness: Harness) -> list[Any]:
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.execute(select(QuotaReservation))).scalars())


async def test_a_stale_replicas_reservation_is_recovered_once_and_never_settled_again(harness: Harness) -> None:
    user_id = await _user(harness)
    dead = _quotas(harness, "dead-replica")
    await _beat(harness, "dead-replica", age=60)  # 4 heartbeats of 1 s missed long ago
    reservation = await dead.reserve(
        user_id=user_id, messages=1, prompt_bound=100, prompt_estimate=40, want_completion=900
    )
    assert reservation.grant == 1000 and await _counter(harness, user_id) == (0, 1000)
    dead.track(reservation, progress=lambda: (40, 200), lost=lambda: None)
    assert await dead.checkpoint() == 1

    sessionmaker = harness.runtime.db.sessionmaker
    recovered = await recover(sessionmaker, me="live-replica", checkpoint_seconds=1)
    assert [(r.replica, r.reason, r.reservations, r.users) for r in recovered] == [
        ("dead-replica", "heartbeat stale", 1, [user_id])
    ]
    tokens, reserved = await _counter(harness, user_id)
    # The checkpoint (40 + 200) plus what it could have produced at its rate up to the replica's last sign of life.
    assert reserved == 0 and 240 <= tokens <= 1000
    assert recovered[0].tokens_charged == tokens and recovered[0].tokens_released == 1000

    await dead.settle(reservation, tokens=999)  # the dead replica comes back and settles: nothing happens
    assert await _counter(harness, user_id) == (tokens, 0)
    assert await recover(sessionmaker, me="live-replica", checkpoint_seconds=1) == []

    events = (await harness.client.get("/admin/audit", params={"action": "quota.reservations_recovered"})).json()
    assert len(events["items"]) == 1
    assert events["items"][0]["target_id"] == "dead-replica"
    assert events["items"][0]["details"]["tokens_charged"] == tokens
    assert (await harness.client.get("/admin/audit/verify")).json()["ok"] is True


async def test_a_live_replicas_reservations_are_left_alone(harness: Harness) -> None:
    user_id = await _user(harness)
    alive = _quotas(harness, "alive-replica")
    await _beat(harness, "alive-replica", age=0)
    reservation = await alive.reserve(
        user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90
    )
    assert await recover(harness.runtime.db.sessionmaker, me="live-replica", checkpoint_seconds=1) == []
    assert await _counter(harness, user_id) == (0, 100)
    await alive.settle(reservation, tokens=30)
    assert await _counter(harness, user_id) == (30, 0)
    assert await _reservations(harness) == []


async def test_a_process_gone_from_this_host_is_recovered_before_its_heartbeat_goes_stale(harness: Harness) -> None:
    user_id = await _user(harness)
    gone_pid = subprocess.Popen(["true"])  # a pid that no longer runs once it has been waited for
    gone_pid.wait()
    gone = _quotas(harness, "gone-replica")
    await _beat(harness, "gone-replica", age=0, host_id=host_identity(), pid=gone_pid.pid)
    await gone.reserve(user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90)
    recovered = await recover(harness.runtime.db.sessionmaker, me="live-replica", checkpoint_seconds=1)
    assert [(r.replica, r.reason) for r in recovered] == [("gone-replica", "process gone")]
    # No checkpoint yet: charged its prompt estimate only (it produced nothing anyone saw).
    assert await _counter(harness, user_id) == (5, 0)


async def test_replicas_recovering_at_the_same_time_settle_each_reservation_once(harness: Harness) -> None:
    user_id = await _user(harness)
    dead = _quotas(harness, "dead-twice")
    await _beat(harness, "dead-twice", age=60)
    for _ in range(20):
        await dead.reserve(user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=40)
    sessionmaker = harness.runtime.db.sessionmaker
    results = await asyncio.gather(
        *(recover(sessionmaker, me=f"live-{n}", checkpoint_seconds=1) for n in range(4)), return_exceptions=True
    )
    recovered = [r for result in results if isinstance(result, list) for r in result]
    assert sum(r.reservations for r in recovered) == 20, results
    assert await _counter(harness, user_id) == (20 * 5, 0)
    events = (await harness.client.get("/admin/audit", params={"action": "quota.reservations_recovered"})).json()
    assert len(events["items"]) == len(recovered)


async def test_a_replica_whose_reservation_was_recovered_stops_the_request(harness: Harness) -> None:
    user_id = await _user(harness)
    mine = _quotas(harness, "presumed-dead")
    reservation = await mine.reserve(
        user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90
    )
    stopped: list[int] = []
    mine.track(reservation, progress=lambda: (5, 3), lost=lambda: stopped.append(reservation.id))
    assert await mine.checkpoint() == 1 and stopped == []
    async with harness.runtime.db.sessionmaker() as session, session.begin():  # another replica recovered it
        await session.execute(delete(QuotaReservation).where(QuotaReservation.id == reservation.id))
    await mine.checkpoint()
    assert stopped == [reservation.id]


def test_what_a_recovered_request_is_charged() -> None:
    now = utcnow()
    row = SimpleNamespace(
        prompt_tokens=50,
        completion_tokens=100,
        granted=1_000,
        created_at=now - timedelta(seconds=10),
        checkpoint_at=now - timedelta(seconds=2),  # 100 tokens in 8 s: 12.5 a second
    )
    # One more checkpoint interval at its rate after the replica's last batch (its own checkpoint here).
    assert charged_tokens(row, last_batch=row.checkpoint_at, checkpoint_seconds=2) == 150 + 25
    # The replica wrote later batches without this row: it had stopped moving; still one interval at most.
    assert charged_tokens(row, last_batch=now + timedelta(hours=1), checkpoint_seconds=2) == 175
    assert charged_tokens(row, last_batch=None, checkpoint_seconds=2) == 175
    assert charged_tokens(row, last_batch=row.checkpoint_at, checkpoint_seconds=1000) == 1_000  # at most the grant
    unlimited = SimpleNamespace(**{**vars(row), "granted": 0})
    assert charged_tokens(unlimited, last_batch=row.checkpoint_at, checkpoint_seconds=2) == 175
    fresh = SimpleNamespace(**{**vars(row), "checkpoint_at": None, "completion_tokens": 0})
    assert charged_tokens(fresh, last_batch=None, checkpoint_seconds=2) == 50


async def test_holds_that_no_reservation_backs_are_reconciled(harness: Harness) -> None:
    user_id = await _user(harness)
    quotas = _quotas(harness, "live-replica")
    reservation = await quotas.reserve(
        user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90
    )
    async with harness.runtime.db.sessionmaker() as session, session.begin():  # a hold from an older release
        await session.execute(update(UsageCounter).where(UsageCounter.user_id == user_id).values(reserved_tokens=QUOTA))
    assert await reconcile(harness.runtime.db.sessionmaker) == 1
    assert await _counter(harness, user_id) == (0, 100), "the request in flight still holds its grant"
    assert await reconcile(harness.runtime.db.sessionmaker) == 0
    events = (await harness.client.get("/admin/audit", params={"action": "quota.holds_reconciled"})).json()
    assert [(e["target_id"], e["details"]["before"], e["details"]["after"]) for e in events["items"]] == [
        (str(user_id), QUOTA, 100)
    ]
    await quotas.settle(reservation, tokens=40)
    assert await _counter(harness, user_id) == (40, 0)


async def test_a_usage_reset_keeps_what_requests_in_flight_hold(harness: Harness) -> None:
    user_id = await _user(harness)
    quotas = _quotas(harness, "live-replica")
    done = await quotas.reserve(user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=40)
    await quotas.settle(done, tokens=30)
    flying = await quotas.reserve(user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90)
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        assert await reset_usage(session, day=flying.day, user_id=user_id) == 1
    assert await _counter(harness, user_id) == (0, 100)
    await quotas.settle(flying, tokens=60)
    assert await _counter(harness, user_id) == (60, 0)


async def test_a_settlement_that_failed_is_retried(harness: Harness) -> None:
    user_id = await _user(harness)
    quotas = _quotas(harness, "live-replica")
    reservation = await quotas.reserve(
        user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90
    )
    real = quotas._settle
    calls = 0

    async def flaky(params: dict[str, Any], refund: bool) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database went away for a moment")
        await real(params, refund)

    quotas._settle = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await quotas.settle(reservation, tokens=70)
    assert await _counter(harness, user_id) == (0, 100)
    await quotas.checkpoint()  # the checkpoint loop retries it
    assert await _counter(harness, user_id) == (70, 0)
    assert await quotas.retry_settlements() == 0


async def test_a_reservation_whose_request_was_cancelled_meanwhile_is_given_back(harness: Harness) -> None:
    user_id = await _user(harness)
    quotas = _quotas(harness, "live-replica")
    first = await quotas.reserve(user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90)
    await quotas.settle(first, tokens=0, refund_message=True)  # the day's counter exists: the next ones take holds
    finished = []
    for _ in range(5):
        task = asyncio.create_task(
            quotas.reserve(user_id=user_id, messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90)
        )
        await asyncio.sleep(0)  # into the statement, then cancelled (a client gone, a shutdown)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            finished.append(await task)  # SQLite's store never yields between BEGIN and COMMIT: done already
    for reservation in finished:  # what the request would have settled
        await quotas.settle(reservation, tokens=0, refund_message=True)
    await quotas.close()  # waits for what it is giving back
    assert await _reservations(harness) == []
    async with harness.runtime.db.sessionmaker() as session:
        row = (await session.execute(select(UsageCounter).where(UsageCounter.user_id == user_id))).scalar_one()
    assert (row.messages, row.tokens, row.reserved_tokens) == (0, 0, 0)
