"""How long a usage report takes on a large request log, on SQLite and on PostgreSQL.

    uv run --frozen python -m bench.report_bench                      # 1,000,000 rows, both backends
    uv run --frozen python -m bench.report_bench --rows 100000 --backends sqlite --explain

For each backend: a fresh database (a SQLite file in a temporary folder; a PostgreSQL database on 127.0.0.1:5432,
trust auth, created and dropped here), migrated to head, filled with realistic request-log rows (100 users, 10
groups, 200 keys, 8 models, 3 upstreams, 7 surfaces, over 30 days ending now); then the report over those 30
days by user, by group, by model and by group+model, through gatehouse.reports.service as the API calls it,
5 times each: the median, fastest and slowest in a table. See bench/README.md for the figures.

tests/integration/reports/test_report_bench.py fills a few thousand rows with the same generator and checks the
reports against a computation in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.auth.models import ApiKey, Group, GroupMember, User
from gatehouse.db import migrate
from gatehouse.db.engine import create_engine, create_sessionmaker, read_only
from gatehouse.gateway.models import RequestLog
from gatehouse.reports import service
from gatehouse.reports.query import Dimension, ReportQuery
from gatehouse.settings import Settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
FIRST_ID = 1001  # ids of what fill() writes: clear of a bootstrap admin's
BATCH = 20_000
REPORTS: tuple[tuple[Dimension, ...], ...] = (("user",), ("group",), ("model",), ("group", "model"))

# name, upstream, share of requests, price per million tokens in millionths (input, output); None: unpriced
MODELS: tuple[tuple[str, str, int, tuple[int, int] | None], ...] = (
    ("gpt-4o", "openai", 18, (2_500_000, 10_000_000)),
    ("gpt-4o-mini", "openai", 25, (150_000, 600_000)),
    ("o3-mini", "openai", 5, (1_100_000, 4_400_000)),
    ("claude-sonnet-4", "anthropic", 14, (3_000_000, 15_000_000)),
    ("claude-haiku-3.5", "anthropic", 8, (800_000, 4_000_000)),
    ("llama3.1:70b", "ollama-gpu", 12, (200_000, 200_000)),
    ("qwen2.5-coder:32b", "ollama-gpu", 10, None),
    ("nomic-embed-text", "ollama-gpu", 8, (10_000, 0)),
)
SURFACES = ("chat", "responses", "messages", "completions", "ollama_chat", "generate", "embeddings")
CHAT_SURFACES = {"chat": 50, "responses": 15, "messages": 15, "completions": 5, "ollama_chat": 10, "generate": 5}
PROTOCOLS = {"messages": "anthropic", "ollama_chat": "ollama", "generate": "ollama"}
# status, share (per mille), whether it reached an upstream
STATUSES = ((200, 955, True), (429, 20, False), (400, 8, False), (403, 4, False), (502, 10, True), (504, 3, True))


@dataclass(frozen=True)
class Shape:
    """How much to write."""

    rows: int = 1_000_000
    users: int = 100
    groups: int = 10
    keys: int = 200
    days: int = 30


@dataclass
class World:
    """What fill() wrote besides the request log: who is who."""

    emails: dict[int, str] = field(default_factory=dict)
    group_names: dict[int, str] = field(default_factory=dict)
    memberships: dict[int, list[int]] = field(default_factory=dict)  # user -> groups
    keys: dict[int, tuple[int, int | None, str, str]] = field(default_factory=dict)  # key -> user, group, name, prefix


def world(shape: Shape, seed: int) -> World:
    """Users, groups, memberships and keys: most users in one group, some in two, some in none; a tenth of the keys
    bound to a group of their owner's (project keys)."""
    rng = random.Random(seed)
    made = World()
    group_ids = [FIRST_ID + i for i in range(shape.groups)]
    made.group_names = {g: f"team-{i + 1:02d}" for i, g in enumerate(group_ids)}
    for i in range(shape.users):
        user_id = FIRST_ID + i
        made.emails[user_id] = f"user-{i + 1:03d}@example.com"
        draw = rng.random()
        groups = [] if draw < 0.1 else rng.sample(group_ids, 2 if draw > 0.8 else 1)
        made.memberships[user_id] = groups
    users = list(made.emails)
    for i in range(shape.keys):
        owner = users[i % len(users)]
        owned = made.memberships[owner]
        bound = owned[0] if owned and rng.random() < 0.1 else None
        prefix = f"gh_{hashlib.sha256(f'{seed}-{i}'.encode()).hexdigest()[:8]}"
        made.keys[FIRST_ID + i] = (owner, bound, rng.choice(["laptop", "ci", "notebook", "agent", "=cmd"]), prefix)
    return made


def request_rows(shape: Shape, made: World, *, now: datetime, seed: int) -> Iterator[dict[str, Any]]:
    """The request log, in time order: heavy and light users, popular and rare models, mostly successes."""
    rng = random.Random(seed + 1)
    keys = list(made.keys)
    key_weights = [1 / (rank + 1) ** 0.8 for rank in range(len(keys))]  # a few keys do most of the work
    rng.shuffle(key_weights)
    models = [m for m in MODELS]
    model_weights = [m[2] for m in MODELS]
    statuses = [s for s in STATUSES]
    status_weights = [s[1] for s in STATUSES]
    chat_surfaces = list(CHAT_SURFACES)
    chat_weights = list(CHAT_SURFACES.values())
    start = now - timedelta(days=shape.days)
    span = (now - start).total_seconds()
    moments = sorted(rng.random() * span for _ in range(shape.rows))
    picked_keys = rng.choices(keys, key_weights, k=shape.rows)
    picked_models = rng.choices(models, model_weights, k=shape.rows)
    picked_statuses = rng.choices(statuses, status_weights, k=shape.rows)
    for n in range(shape.rows):
        key_id = picked_keys[n]
        model, upstream, _, price = picked_models[n]
        status, _, reached = picked_statuses[n]
        embedding = model == "nomic-embed-text"
        surface = "embeddings" if embedding else rng.choices(chat_surfaces, chat_weights)[0]
        prompt = rng.randint(5, 400) if embedding else int(rng.lognormvariate(6.5, 1.0))
        completion = 0 if embedding else int(rng.lognormvariate(5.3, 0.9))
        if not reached or status != 200:
            completion = 0
            prompt = prompt if reached else 0
        cost = None
        if price is not None:
            cost = (prompt * price[0] + completion * price[1]) // 1000  # millionths per million -> billionths
        latency = rng.uniform(40, 200) if not reached else rng.uniform(150, 4000) + completion * 12
        yield {
            "created_at": start + timedelta(seconds=moments[n]),
            "request_id": f"req_{seed}_{n:08d}",
            "user_id": made.keys[key_id][0],
            "key_id": key_id,
            "endpoint": "embeddings" if embedding else "chat",
            "protocol": PROTOCOLS.get(surface, "openai"),
            "surface": surface,
            "model": model,
            "upstream": upstream if reached else None,
            "stream": not embedding and rng.random() < 0.7,
            "status_code": status,
            "error_code": None if status == 200 else f"error_{status}",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "usage_reported": True,
            "latency_ms": round(latency, 1),
            "ttft_ms": round(latency / 3, 1) if reached and not embedding else None,
            "cost_nanos": cost,
        }


async def fill(engine: AsyncEngine, shape: Shape, *, now: datetime, seed: int = 7) -> World:
    """Write a world and its request log into a migrated, empty database."""
    made = world(shape, seed)
    created = now - timedelta(days=shape.days + 30)
    async with engine.begin() as conn:
        await conn.execute(
            insert(User),
            [
                {"id": u, "email": e, "role": "user", "status": "active", "created_at": created}
                for u, e in made.emails.items()
            ],
        )
        await conn.execute(
            insert(Group), [{"id": g, "name": n, "description": ""} for g, n in made.group_names.items()]
        )
        members = [{"group_id": g, "user_id": u} for u, groups in made.memberships.items() for g in groups]
        await conn.execute(insert(GroupMember), members)
        await conn.execute(
            insert(ApiKey),
            [
                {
                    "id": k,
                    "user_id": user,
                    "group_id": group,
                    "name": name,
                    "prefix": prefix,
                    "key_hash": hashlib.sha256(f"{seed}-{k}".encode()).hexdigest(),
                    "created_at": created,
                }
                for k, (user, group, name, prefix) in made.keys.items()
            ],
        )
    rows = request_rows(shape, made, now=now, seed=seed)
    if engine.dialect.name == "postgresql":
        await _copy(engine, rows)
    else:
        await _insert(engine, rows)
    return made


async def _insert(engine: AsyncEngine, rows: Iterator[dict[str, Any]]) -> None:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            async with engine.begin() as conn:
                await conn.execute(insert(RequestLog), batch)
            batch = []
    if batch:
        async with engine.begin() as conn:
            await conn.execute(insert(RequestLog), batch)


async def _copy(engine: AsyncEngine, rows: Iterator[dict[str, Any]]) -> None:
    """PostgreSQL's COPY: a million rows in seconds rather than minutes."""
    columns: list[str] = []
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            columns = columns or list(row)
            batch.append(tuple(row.values()))
            if len(batch) == BATCH:
                await raw.copy_records_to_table("request_log", records=batch, columns=columns)
                batch = []
        if batch:
            await raw.copy_records_to_table("request_log", records=batch, columns=columns)


@dataclass(frozen=True)
class Timing:
    backend: str
    group_by: tuple[Dimension, ...]
    runs_ms: list[float]
    rows: int

    @property
    def median(self) -> float:
        return statistics.median(self.runs_ms)


async def time_reports(engine: AsyncEngine, *, start: datetime, end: datetime, runs: int) -> list[Timing]:
    """Each report `runs` times, as the route runs it (a read-only transaction)."""
    sessions = create_sessionmaker(read_only(engine))
    timings = []
    for group_by in REPORTS:
        query = ReportQuery(group_by=group_by, start=start, end=end)
        took, rows = [], 0
        for _ in range(runs):
            began = time.perf_counter()
            async with sessions() as session, session.begin():
                report = await service.report(session, query=query)
            took.append((time.perf_counter() - began) * 1000)
            rows = len(report.rows)
        timings.append(Timing(engine.dialect.name, group_by, took, rows))
    return timings


async def explain(engine: AsyncEngine, *, start: datetime, end: datetime) -> None:
    """Print the query plan of each report (PostgreSQL's with the time each step took)."""
    verb = "EXPLAIN (ANALYZE, BUFFERS)" if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
    async with engine.connect() as conn:
        for group_by in REPORTS:
            built = service.statement(ReportQuery(group_by=group_by, start=start, end=end), dialect=engine.dialect.name)
            sql = built.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
            print(f"\n-- {engine.dialect.name}, by {' + '.join(group_by)}")
            for line in (await conn.exec_driver_sql(f"{verb} {sql}")).all():
                print("  ", *(str(part) for part in line))


async def run_backend(backend: str, shape: Shape, *, runs: int, show_plan: bool, keep: Path | None) -> list[Timing]:
    """Fresh database, fill, time; the database is removed afterwards (SQLite: kept in `keep` when given)."""
    now = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="gatehouse-report-bench-"))
    name = f"gatehouse_report_bench_{secrets.token_hex(4)}"
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{folder}/report.db"
    else:
        admin = await asyncpg.connect(PG_ADMIN.replace("postgresql://", "postgres://"))
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        await migrate.upgrade(url)
        began = time.perf_counter()
        await fill(engine, shape, now=now)
        if backend == "postgresql":
            async with engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE")  # what autovacuum does soon after a bulk load
        print(f"{backend}: {shape.rows:,} rows written in {time.perf_counter() - began:.0f} s", flush=True)
        start = now - timedelta(days=shape.days)
        if show_plan:
            await explain(engine, start=start, end=now)
        return await time_reports(engine, start=start, end=now, runs=runs)
    finally:
        await engine.dispose()
        if backend == "postgresql":
            admin = await asyncpg.connect(PG_ADMIN.replace("postgresql://", "postgres://"))
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        if keep is not None and backend == "sqlite":
            shutil.move(folder / "report.db", keep)
        shutil.rmtree(folder, ignore_errors=True)


def table(timings: list[Timing], rows: int) -> str:
    """The results as a markdown table."""
    lines = [
        f"| backend | report ({rows:,} request-log rows, 30 days) | rows | median | fastest | slowest |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for t in timings:
        lines.append(
            f"| {t.backend} | by {' + '.join(t.group_by)} | {t.rows} | {t.median:,.0f} ms | {min(t.runs_ms):,.0f} ms "
            f"| {max(t.runs_ms):,.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=Shape.rows, help="request-log rows (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each report (default 5; the median is shown)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both (default)")
    parser.add_argument("--explain", action="store_true", help="print each report's query plan")
    parser.add_argument("--keep", type=Path, help="keep the SQLite database at this path")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            parser.error(f"--backends: unknown backend {backend!r} (sqlite, postgresql)")
    timings: list[Timing] = []
    for backend in backends:
        shape = Shape(rows=args.rows)
        timings += asyncio.run(run_backend(backend, shape, runs=args.runs, show_plan=args.explain, keep=args.keep))
    print()
    print(table(timings, args.rows))
    one, five, _ = os.getloadavg()  # other work on the machine shows in the figures
    print(f"\n{os.cpu_count()} CPUs; load average at the end: {one:.1f} (1 min), {five:.1f} (5 min)")


if __name__ == "__main__":
    main()
