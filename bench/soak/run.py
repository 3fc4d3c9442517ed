"""The soak: topology up, users and keys, traffic and operators for the run's length with the replicas sampled, then
the checks (errors explained, RSS and open files, usage against the fake upstream's ledger, the audit chain) and
the report, written into docs/reliability.md's Soak section. Exit status 1 when a criterion fails."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.soak import topology
from bench.soak.operators import Operators
from bench.soak.render import render
from bench.soak.report import LedgerCheck, Sample, UsageRow, compare_usage, svg_chart, write_section
from bench.soak.sampler import sample_every
from bench.soak.traffic import Person, World, client_loop

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
CHART = ROOT / "docs" / "reliability-soak.svg"


@dataclass
class Outcome:
    """Everything the report shows."""

    minutes: float
    warmup: float
    started_at: datetime
    world: World
    operators: Operators
    samples: dict[str, list[Sample]]
    ledger: LedgerCheck | None = None
    other_rows: list[str] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    audit_cli: str = ""
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    machine: str = ""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=30.0, help="traffic time (default 30; SOAK_MINUTES in make soak)")
    p.add_argument("--users", type=int, default=6, help="soak users, one client each (default 6)")
    p.add_argument("--pause", type=float, default=0.05, help="mean seconds between a client's requests (default 0.05)")
    p.add_argument("--sample-seconds", type=float, default=5.0, help="seconds between RSS/open-files samples")
    p.add_argument("--warmup", type=float, default=None, help="seconds not judged (default: 20%% of the run, >= 60)")
    p.add_argument("--token-delay", type=float, default=0.02, help="the fake upstream's seconds per token")
    p.add_argument("--output", type=Path, default=DOC, help="the markdown whose Soak section is rewritten")
    p.add_argument("--chart", type=Path, default=CHART, help="the SVG chart written beside it")
    p.add_argument("--no-docs", action="store_true", help="print the report only")
    p.add_argument("--keep", action="store_true", help="leave the topology's directory, database and logs behind")
    p.add_argument("--seed", type=int, default=19)
    return p.parse_args(argv)


async def _setup_people(admin: httpx.AsyncClient, count: int) -> list[Person]:
    people = []
    stamp = int(time.time())
    for n in range(count):
        email = f"soak-{stamp}-{n}@example.com"
        user = await admin.post("/admin/users", json={"email": email, "display_name": f"Soak {n}"})
        user.raise_for_status()
        key = await admin.post(f"/admin/users/{user.json()['id']}/keys", json={"name": "soak"})
        key.raise_for_status()
        people.append(Person(user_id=user.json()["id"], email=email, key=key.json()["key"], key_id=key.json()["id"]))
    return people


async def _upstream_ids(admin: httpx.AsyncClient) -> dict[str, int]:
    answer = await admin.get("/admin/upstreams")
    answer.raise_for_status()
    data = answer.json()
    items = data["items"] if isinstance(data, dict) else data
    return {item["name"]: item["id"] for item in items}


async def _gatehouse_usage(
    database_url: str,
) -> tuple[dict[str, UsageRow], dict[str, UsageRow], list[str], dict[str, int]]:
    """From the request log: per model, the answers that finished, the terminated ones, the other rows that reached an
    upstream (described), and the tokens of every row per model (for the report API's cross-check)."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"), timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT model, status_code, error_code, upstream IS NOT NULL AS reached, count(*) AS n,"
            " coalesce(sum(prompt_tokens), 0) AS p, coalesce(sum(completion_tokens), 0) AS c"
            " FROM request_log GROUP BY 1, 2, 3, 4"
        )
    finally:
        await conn.close()
    finished: dict[str, UsageRow] = {}
    cut: dict[str, UsageRow] = {}
    other: list[str] = []
    tokens: dict[str, int] = {}
    for row in rows:
        model, n, p, c = row["model"], row["n"], row["p"], row["c"]
        tokens[model] = tokens.get(model, 0) + p + c
        target = None
        if row["error_code"] == "terminated_by_operator":
            target = cut
        elif row["status_code"] == 200 and row["error_code"] is None:
            target = finished
        elif row["reached"]:
            other.append(f"{model}: {n} x {row['status_code']} {row['error_code']} ({p} + {c} tokens)")
        if target is not None:
            was = target.get(model, UsageRow())
            target[model] = UsageRow(was.requests + n, was.prompt_tokens + p, was.completion_tokens + c)
    return finished, cut, other, tokens


async def _check_usage(top: topology.Topology, admin: httpx.AsyncClient, outcome: Outcome) -> None:
    """Wait (up to 60 s) for the batched request log to catch up with the ledger, then compare."""
    deadline = time.monotonic() + 60
    while True:
        finished, cut, other, tokens = await _gatehouse_usage(top.database_url)
        ledger = await asyncio.to_thread(top.upstream.ledger)
        check = compare_usage(finished, cut, ledger)
        if check.ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    outcome.ledger = check
    outcome.other_rows = other
    report = await admin.get("/admin/usage/report", params={"group_by": "model", "limit": 100})
    if report.status_code != 200:
        outcome.problems.append(f"GET /admin/usage/report answered {report.status_code}: {report.text[:200]}")
        return
    for row in report.json()["rows"]:
        if row["model"] in tokens and row["prompt_tokens"] + row["completion_tokens"] != tokens[row["model"]]:
            outcome.problems.append(
                f"the usage report's tokens for {row['model']} ({row['prompt_tokens']} + {row['completion_tokens']}) "
                f"differ from the request log's ({tokens[row['model']]})"
            )


async def soak(top: topology.Topology, args: argparse.Namespace, warmup: float) -> Outcome:
    """Traffic and operators for args.minutes with sampling; then the checks."""
    headers = {"authorization": f"Bearer {top.admin_key}"}
    async with httpx.AsyncClient(base_url=top.proxy_url, headers=headers, timeout=60, trust_env=False) as admin:
        people = await _setup_people(admin, args.users)
        upstreams = await _upstream_ids(admin)
        started = time.monotonic()
        world = World(people=people, started=started)
        operators = Operators(admin, world, upstreams, seed=args.seed)
        outcome = Outcome(args.minutes, warmup, datetime.now(UTC), world, operators, {})
        pids = {f"replica {n}": (lambda n=n: top.replica_pid(n)) for n in topology.REPLICAS}
        sampler_stop = asyncio.Event()
        sampler = asyncio.create_task(
            sample_every(
                args.sample_seconds, lambda: {k: f() for k, f in pids.items()}, outcome.samples, started, sampler_stop
            )
        )
        clients = [
            asyncio.create_task(client_loop(top.proxy_url, world, person, args.seed + i, pause=args.pause))
            for i, person in enumerate(people)
        ]
        acting = asyncio.create_task(operators.run(args.minutes))
        try:
            await asyncio.wait_for(world.stop.wait(), timeout=args.minutes * 60)
        except TimeoutError:
            world.stop.set()
        await asyncio.gather(*clients, acting)
        # The replicas are sampled through the checks too: what the run left behind shows in the last window.
        await _check_usage(top, admin, outcome)
        verify = await admin.get("/admin/audit/verify")
        outcome.audit = verify.json() if verify.status_code == 200 else {"ok": False, "status": verify.status_code}
        sampler_stop.set()
        await sampler
        outcome.elapsed = time.monotonic() - started
    cli = await asyncio.to_thread(top.gatehouse, "audit", "verify")
    outcome.audit_cli = f"exit {cli.returncode}: {(cli.stdout + cli.stderr).strip()[-300:]}"
    return outcome


def verdict(outcome: Outcome) -> list[str]:
    """The failed criteria, each a sentence (empty: the soak passed)."""
    from bench.soak.report import files_trend, rss_trend

    failed = list(outcome.problems)
    tally = outcome.world.tally
    if tally.unexplained:
        failed.append(f"{tally.unexplained} unexplained errors")
    if outcome.operators.failures:
        failed.append(f"{len(outcome.operators.failures)} operator actions failed")
    for name, samples in sorted(outcome.samples.items()):
        rss, files = rss_trend(samples, outcome.warmup), files_trend(samples, outcome.warmup)
        if rss is None or files is None:
            failed.append(f"{name}: too few samples after warm-up")
            continue
        if not rss.ok:
            failed.append(f"{name}: RSS grew {rss.growth:.1%} after warm-up")
        if not files.ok:
            failed.append(f"{name}: open files went from {files.start:.0f} to {files.end:.0f}")
    if len(outcome.samples) != len(topology.REPLICAS):
        failed.append(f"sampled {len(outcome.samples)} replicas, not {len(topology.REPLICAS)}")
    if outcome.ledger is None or not outcome.ledger.ok:
        failed.append("usage differs from the fake upstream's ledger")
    if not outcome.audit.get("ok"):
        failed.append(f"audit chain not verified: {outcome.audit}")
    if not outcome.audit_cli.startswith("exit 0"):
        failed.append(f"gatehouse audit verify: {outcome.audit_cli}")
    return failed


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the report; rewrite docs/reliability.md's Soak section; 0 when every criterion holds."""
    args = _parse(argv)
    warmup = args.warmup if args.warmup is not None else max(60.0, args.minutes * 60 * 0.2)
    with tempfile.TemporaryDirectory(prefix="gatehouse-soak-") as tmp:
        workdir = Path(tmp) if not args.keep else Path(tempfile.mkdtemp(prefix="gatehouse-soak-keep-"))
        print(f"soak: starting the HA topology in {workdir} ...", file=sys.stderr)
        with topology.running(workdir, token_delay=args.token_delay, keep=args.keep) as top:
            print(f"soak: {args.minutes:g} min of traffic through {top.proxy_url}", file=sys.stderr)
            outcome = asyncio.run(soak(top, args, warmup))
    outcome.machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    failed = verdict(outcome)
    section = render(outcome, failed, chart_name=args.chart.name)
    print(section)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    raw = {
        "minutes": args.minutes,
        "samples": {k: [s.__dict__ for s in v] for k, v in outcome.samples.items()},
        "events": outcome.world.events,
        "failed": failed,
    }
    (results / f"soak-{outcome.started_at:%Y%m%dT%H%M%S}.json").write_text(json.dumps(raw, indent=1))
    if not args.no_docs:
        write_section(args.output, section)
        args.chart.write_text(svg_chart(outcome.samples, title=f"Soak, {args.minutes:g} min", warmup=warmup))
        print(f"soak: wrote {args.output} (Soak section) and {args.chart}", file=sys.stderr)
    if failed:
        print("soak: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    print("soak: passed", file=sys.stderr)
    return 0
