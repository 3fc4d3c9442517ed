"""A reservation whose statement reached PostgreSQL but whose answer was lost (the server restarted, the network was
cut) may have committed: it is given back once the database answers again, so a request refused with 503 holds
nothing and costs no message. PostgreSQL only: SQLite's statements run in the process, they commit or they do not."""

from __future__ import annotations

import os
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gatehouse.limits.models import QuotaReservation, UsageCounter
from gatehouse.limits.quotas import Quotas
from tests.conftest import Harness


async def _counter(harness: Harness, user_id: int) -> tuple[int, int, int]:
    async with harness.runtime.db.sessionmaker() as session:
        row = (await session.execute(select(UsageCounter).where(UsageCounter.user_id == user_id))).scalar_one()
        return row.messages, row.tokens, row.reserved_tokens


async def test_a_reservation_whose_answer_was_lost_is_given_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = harness.runtime.statements
    if store.dialect_name != "postgresql":
        pytest.skip("an in-process SQLite statement commits or not: no answer to lose")
    user = (await harness.client.post("/admin/users", json={"email": f"o-{os.urandom(4).hex()}@example.com"})).json()
    await harness.client.patch(f"/admin/users/{user['id']}", json={"tokens_per_day": 10_000})
    quotas = Quotas(store, replica="live-replica", timezone="UTC", wait_seconds=0, checkpoint_seconds=60)
    first = await quotas.reserve(user_id=user["id"], messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90)
    await quotas.settle(first, tokens=0, refund_message=True)  # the day's counter exists now

    real, lost = store.scalar, []

    async def answer_lost(statement: Any, params: dict[str, Any]) -> Any:
        value = await real(statement, params)
        if not lost:  # committed, but the connection broke before the answer came back
            lost.append(params)
            raise OperationalError("INSERT INTO quota_reservation ...", params, ConnectionResetError("connection lost"))
        return value

    monkeypatch.setattr(store, "scalar", answer_lost)
    with pytest.raises(OperationalError):  # the request is refused: 503 database_unavailable
        await quotas.reserve(user_id=user["id"], messages=1, prompt_bound=10, prompt_estimate=5, want_completion=90)
    assert await _counter(harness, user["id"]) == (1, 0, 100)  # held all the same, for nobody

    assert await quotas.retry_settlements() == 0  # what the checkpoint loop does once the database answers
    assert await _counter(harness, user["id"]) == (0, 0, 0)
    async with harness.runtime.db.sessionmaker() as session:
        assert list((await session.execute(select(QuotaReservation))).scalars()) == []
    assert await quotas.retry_settlements() == 0  # given back once: a second pass finds nothing
    await quotas.close()
