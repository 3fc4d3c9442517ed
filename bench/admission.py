"""Per-request cost of admission and settlement: the quota reservation and settlement statements, and a
rate-limit check, on SQLite and on PostgreSQL (+ Redis), measured in-process.

    uv run python bench/admission.py [--requests N] [--rounds R]

Prints a markdown table of medians (across rounds, each round's median of N requests) in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.services import create_postgres_database, drop_postgres_database, redis_server

from gatehouse.accounts.users import service as users
from gatehouse.db.engine import create_autocommit_engine, create_engine, create_sessionmaker
from gatehouse.db.migrate import upgrade
from gatehouse.db.statements import EngineStore, StatementStore, create_store
from gatehouse.limits.quotas import Quotas
from gatehouse.limits.ratelimit import RateLimiter
from gatehouse.settings import Settings


async def _time(n: int, step: Callable[[], Awaitable[None]]) -> float:
    """Median seconds of `step` over n runs (after a warm-up)."""
    for _ in range(20):
        await step()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def measure(database_url: str, redis_url: str, requests: int) -> dict[str, float]:
    """Median microseconds per operation on one database."""
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix="bench:",  # type: ignore[call-arg]
        rate_limit_per_minute=10**9,
    )
    await upgrade(database_url)
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        user = await users.new_user(
            session, email=f"bench-{time.time_ns()}@example.com", messages_per_day=10**9, tokens_per_day=10**12
        )
    autocommit = create_autocommit_engine(settings)
    statements = create_store(autocommit)  # what the gateway uses (Runtime.statements)
    await statements.start()

    def reserve_and_settle(target: StatementStore) -> Callable[[], Awaitable[None]]:
        ledger = Quotas(target, replica="bench", timezone="UTC", wait_seconds=0, checkpoint_seconds=2)

        async def step() -> None:
            reservation = await ledger.reserve(
                user_id=user.id, messages=1, prompt_bound=120, prompt_estimate=60, want_completion=256
            )
            await ledger.settle(reservation, tokens=150)

        return step

    limiter = RateLimiter(settings, sessionmaker)
    await limiter.start()

    async def rate_check() -> None:
        await limiter.hit("user_per_minute", f"u{user.id}")

    try:
        return {
            f"reserve + settle ({type(statements).__name__}, as served)": await _time(
                requests, reserve_and_settle(statements)
            )
            * 1e6,
            "reserve + settle (SQLAlchemy autocommit engine)": await _time(
                requests, reserve_and_settle(EngineStore(autocommit))
            )
            * 1e6,
            f"rate-limit check ({'redis' if redis_url else 'memory'})": await _time(requests, rate_check) * 1e6,
        }
    finally:
        await limiter.clear()
        await limiter.close()
        await statements.close()
        await autocommit.dispose()
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"SQLite (memory limits)": {}, "PostgreSQL + Redis": {}}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = await measure(f"sqlite+aiosqlite:///{tmp}/bench.db", "", args.requests)
        postgres_url = create_postgres_database("gatehouse_bench")
        try:
            postgres = await measure(postgres_url, redis_server(), args.requests)
        finally:
            drop_postgres_database(postgres_url)
        for name, values in (("SQLite (memory limits)", sqlite), ("PostgreSQL + Redis", postgres)):
            for op, value in values.items():
                results[name].setdefault(op, []).append(value)
    print(f"| backend | operation | median µs ({args.rounds} rounds x {args.requests} requests) |")
    print("| --- | --- | ---: |")
    for name, ops in results.items():
        for op, values in ops.items():
            print(f"| {name} | {op} | {statistics.median(values):.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
