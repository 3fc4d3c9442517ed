"""`make bench`: Gatehouse against the fake upstream directly and against LiteLLM's proxy, interleaved.

    uv run --frozen python -m bench [--rounds N] [--quick] [--targets a,b] [--scenarios x,y]
                                    [--litellm-db] [--output FILE] [--surfaces-output FILE] [--no-docs]

Each round starts every target afresh (timing start to ready and reading idle memory), then runs each
scenario against each target in turn, the order rotated from round to round, the 1,000-stream scenario
last; a target that does not serve a scenario's surface (Responses, Messages) is skipped. The report shows
medians over rounds: docs/benchmarks.md from a run of every target and scenario, docs/benchmarks-surfaces.md
from any run of the translated surfaces. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench import loadgen, procstat, report
from bench.targets import (
    ROOT,
    FakeUpstream,
    Floor,
    Gatehouse,
    LiteLLM,
    Target,
    ensure_litellm,
    http_json,
    which_uv,
)

TARGETS = ("direct", "floor", "gatehouse-sqlite", "gatehouse-pg", "litellm")
SCENARIOS = (
    "chat_seq",
    "responses_seq",
    "responses_store_seq",
    "messages_seq",
    "chat_open",
    "chat_sat",
    "stream64",
    "embed_seq",
    "embed_sat",
    "streams1000",
)
WRK_SCRIPT = ROOT / "bench" / "wrk" / "post.lua"

SYSTEM = "You are a helpful assistant."
PROMPT = "Say hello in one short sentence."
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Kind:
    """A kind of request: where a target serves it (None: not served, its scenarios skip the target), how the key
    is sent, and how the probe before a wrk run checks the answer (a `loadgen.sequential` kind)."""

    path: Callable[[Target], str | None]
    check: str
    key_header: str = "Authorization"
    headers: dict[str, str] = field(default_factory=dict)


KINDS = {
    "chat": Kind(lambda t: t.chat_path, "chat"),
    "stream": Kind(lambda t: t.chat_path, "stream"),
    "slow": Kind(lambda t: t.chat_path, "stream"),
    "embed": Kind(lambda t: t.embed_path, "embed"),
    # OpenAI Responses and Anthropic Messages, translated by Gatehouse to chat completions for an OpenAI-compatible
    # upstream (the fake one) and back.
    "responses": Kind(lambda t: t.responses_path, "responses_nostore"),
    "responses_store": Kind(lambda t: t.responses_path, "responses"),
    "messages": Kind(
        lambda t: t.messages_path, "messages", key_header="x-api-key", headers={"anthropic-version": ANTHROPIC_VERSION}
    ),
}
# The scenarios some targets do not serve, by the kind of request they send.
SURFACE_SCENARIOS = {"responses_seq": "responses", "responses_store_seq": "responses_store", "messages_seq": "messages"}


@dataclass
class Profile:
    """How long each part runs."""

    rounds: int = 3
    seq_s: float = 4.0  # one client at a time (wrk -c1)
    open_rate: float = 300.0  # open loop, requests/s
    open_s: float = 8.0
    open_warm_s: float = 1.0
    sat_s: float = 5.0  # saturation (wrk -c64)
    sat_warm_s: float = 1.0
    sat_conns: int = 64
    stream_s: float = 3.0  # sequential 64-token streams
    fast_tokens: int = 64
    embed_s: float = 3.0
    streams: int = 1000  # concurrent slow streams
    ramp_s: float = 4.0
    slow_tokens: int = 50
    slow_first_ms: float = 100.0
    token_ms: float = 200.0
    warmup_requests: int = 100
    idle_s: float = 2.0
    pause_s: float = 0.5  # between two measurements

    @classmethod
    def quick(cls) -> Profile:
        return cls(
            rounds=1,
            seq_s=2.0,
            open_s=4.0,
            open_warm_s=1.0,
            sat_s=3.0,
            sat_warm_s=1.0,
            stream_s=2.0,
            embed_s=2.0,
            ramp_s=3.0,
            slow_tokens=40,
        )


def bodies(p: Profile) -> dict[str, dict[str, Any]]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    return {
        "chat": {"model": "bench-fast", "messages": messages, "max_tokens": p.fast_tokens},
        "stream": {
            "model": "bench-fast",
            "messages": messages,
            "max_tokens": p.fast_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "slow": {
            "model": "bench-slow",
            "messages": messages,
            "max_tokens": p.slow_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "embed": {"model": "bench-embed", "input": "The quick brown fox jumps over the lazy dog."},
        # The chat body's conversation and completion cap in each surface's own shape. Responses: not stored, and
        # stored (`store` left out: true by default, one INSERT per request).
        "responses": {
            "model": "bench-fast",
            "instructions": SYSTEM,
            "input": PROMPT,
            "max_output_tokens": p.fast_tokens,
            "store": False,
        },
        "responses_store": {
            "model": "bench-fast",
            "instructions": SYSTEM,
            "input": PROMPT,
            "max_output_tokens": p.fast_tokens,
        },
        "messages": {
            "model": "bench-fast",
            "max_tokens": p.fast_tokens,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": PROMPT}],
        },
    }


# --- measurements ----------------------------------------------------------------------------------


def run_wrk(
    target: Target, path: str, body_file: Path, conns: int, seconds: float, kind: Kind | None = None
) -> dict[str, Any]:
    env = dict(os.environ, BENCH_BODY_FILE=str(body_file), BENCH_KEY=target.key or "")
    if kind is not None:
        env["BENCH_KEY_HEADER"] = kind.key_header
        env["BENCH_HEADERS"] = "\n".join(f"{name}: {value}" for name, value in kind.headers.items())
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(WRK_SCRIPT)]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{target.port}{path}"], env=env, capture_output=True, text=True, timeout=seconds + 90
    )
    line = next((x for x in reversed(out.stdout.splitlines()) if x.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    raw = json.loads(line)
    errors = sum(raw["errors"].values())
    lat = {k: v / 1000 for k, v in raw["latency_us"].items()}  # ms
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": errors,
        "error_detail": {k: v for k, v in raw["errors"].items() if v},
        "rps": raw["requests"] / seconds_run,
        "latency_ms": {k: lat[k] for k in ("p50", "p90", "p99", "p999")},
    }


class Bench:
    def __init__(self, args: argparse.Namespace, profile: Profile) -> None:
        self.args = args
        self.p = profile
        self.run_dir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
        self.bodies = bodies(profile)
        self.body_files: dict[str, Path] = {}
        for name, body in self.bodies.items():
            path = self.run_dir / f"{name}.json"
            path.write_text(json.dumps(body))
            self.body_files[name] = path
        fake_opts = [
            "--fast-tokens",
            str(profile.fast_tokens),
            "--tokens",
            str(profile.slow_tokens),
            "--slow-first-ms",
            str(profile.slow_first_ms),
            "--token-ms",
            str(profile.token_ms),
        ]
        self.upstream = FakeUpstream(
            name="direct", label="direct (fake upstream)", run_dir=self.run_dir / "fakeup", options=fake_opts
        )
        self.targets: list[Target] = [self.upstream]
        wanted = args.targets
        up = self.upstream.port
        if "floor" in wanted:
            self.targets.append(
                Floor(name="floor", label="bare relay (no features)", run_dir=self.run_dir / "floor", upstream_port=up)
            )
        for backend, label in (("sqlite", "Gatehouse SQLite"), ("pg", "Gatehouse PG+Redis")):
            if f"gatehouse-{backend}" in wanted:
                self.targets.append(
                    Gatehouse(
                        name=f"gatehouse-{backend}",
                        label=label,
                        run_dir=self.run_dir / f"gh-{backend}",
                        upstream_port=up,
                        backend=backend,
                    )
                )
        if "litellm" in wanted:
            self.targets.append(
                LiteLLM(
                    name="litellm",
                    label="LiteLLM",
                    run_dir=self.run_dir / "litellm",
                    upstream_port=up,
                    use_db=args.litellm_db,
                )
            )
        self.results: dict[str, dict[str, list[dict[str, Any]]]] = {t.name: {} for t in self.targets}
        self.code: list[str] = []  # Gatehouse's source at the start of each round

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {message}", file=sys.stderr, flush=True)

    def record(self, target: Target, scenario: str, result: dict[str, Any]) -> None:
        self.results[target.name].setdefault(scenario, []).append(result)

    # --- lifecycle -----------------------------------------------------------------------------

    def prepare(self) -> None:
        self.log(f"run directory {self.run_dir}")
        self.upstream.start()
        try:
            for t in self.targets[1:]:
                self.log(f"preparing {t.name}")
                t.prepare()
        finally:
            self.upstream.stop()

    def cleanup(self) -> None:
        for t in self.targets:
            with contextlib.suppress(Exception):
                t.stop()
        for t in self.targets:
            t.cleanup()

    def start_target(self, t: Target) -> None:
        seconds = t.start()
        request = self.request(t, "chat")
        result = uvloop.run(loadgen.sequential("127.0.0.1", t.port, request, count=self.p.warmup_requests))
        time.sleep(self.p.idle_s)
        rss = procstat.rss_kb(t.pids())
        self.record(t, "start", {"seconds": seconds})
        self.record(
            t, "idle", {"rss_mb": rss / 1024, "errors": result["errors"], "error_samples": result["error_samples"]}
        )
        self.log(
            f"  {t.name}: ready in {seconds:.2f} s, idle RSS {rss / 1024:.1f} MB, warm-up errors {result['errors']}"
        )

    # --- scenarios -------------------------------------------------------------------------------

    @staticmethod
    def path(t: Target, kind: str) -> str:
        path = KINDS[kind].path(t)
        if path is None:
            raise RuntimeError(f"{t.name} does not serve {kind} requests")
        return path

    def serves(self, t: Target, scenario: str) -> bool:
        kind = SURFACE_SCENARIOS.get(scenario)
        return kind is None or KINDS[kind].path(t) is not None

    def request(self, t: Target, kind: str, key_header: str | None = None) -> bytes:
        k = KINDS[kind]
        return loadgen.build_request(
            "127.0.0.1",
            t.port,
            self.path(t, kind),
            self.bodies[kind],
            t.key,
            key_header=key_header or k.key_header,
            headers=k.headers,
        )

    def probe(self, t: Target, kind: str) -> dict[str, Any]:
        """Fully checked requests before a wrk run (wrk checks statuses only): one as wrk sends it; for Messages,
        also one with the key as a bearer token; for Responses, whether the answer was stored as asked."""
        requests = [self.request(t, kind)]
        if KINDS[kind].key_header.lower() != "authorization":
            requests.append(self.request(t, kind, key_header="Authorization"))
        errors, samples = 0, []
        for request in requests:
            result = uvloop.run(
                loadgen.sequential(
                    "127.0.0.1",
                    t.port,
                    request,
                    count=1,
                    kind=KINDS[kind].check,
                    tokens=self.p.fast_tokens,
                    detail=True,
                )
            )
            errors += result["errors"]
            samples += result["error_samples"]
        if kind in ("responses", "responses_store"):
            problem = self.check_stored(t, kind)
            if problem:
                errors += 1
                samples.append(problem)
        return {"errors": errors, "error_samples": samples}

    def check_stored(self, t: Target, kind: str) -> str:
        """A Response created with `store` (the default) can be read back with GET /v1/responses/{id}; one created
        with `store: false` cannot (404). An empty string when so, else what went wrong."""
        path = self.path(t, kind)
        status, answer = http_json(t.port, "POST", path, self.bodies[kind], key=t.key)
        if status != 200 or not isinstance(answer, dict) or not answer.get("id"):
            return f"POST {path} ({kind}) answered {status}: {str(answer)[:200]}"
        store = self.bodies[kind].get("store", True) is not False
        status, stored = http_json(t.port, "GET", f"{path}/{answer['id']}", key=t.key)
        if store and (status != 200 or not isinstance(stored, dict) or stored.get("output") != answer.get("output")):
            return f"GET {path}/{answer['id']} after a stored Response answered {status}: {str(stored)[:200]}"
        if not store and status != 404:
            return f"GET {path}/{answer['id']} after store: false answered {status}, expected 404"
        return ""

    def wrk_scenario(self, t: Target, kind: str, conns: int, seconds: float, warm: float) -> dict[str, Any]:
        probe = self.probe(t, kind)
        path = self.path(t, kind)
        if warm:
            run_wrk(t, path, self.body_files[kind], conns, warm, KINDS[kind])
        result = run_wrk(t, path, self.body_files[kind], conns, seconds, KINDS[kind])
        result["errors"] += probe["errors"]
        if probe["errors"]:
            result["error_samples"] = probe["error_samples"]
        return result

    def chat_seq(self, t: Target) -> dict[str, Any]:
        return self.wrk_scenario(t, "chat", 1, self.p.seq_s, 1.0)

    def responses_seq(self, t: Target) -> dict[str, Any]:
        return self.wrk_scenario(t, "responses", 1, self.p.seq_s, 1.0)

    def responses_store_seq(self, t: Target) -> dict[str, Any]:
        return self.wrk_scenario(t, "responses_store", 1, self.p.seq_s, 1.0)

    def messages_seq(self, t: Target) -> dict[str, Any]:
        return self.wrk_scenario(t, "messages", 1, self.p.seq_s, 1.0)

    def chat_sat(self, t: Target) -> dict[str, Any]:
        return self.wrk_scenario(t, "chat", self.p.sat_conns, self.p.sat_s, self.p.sat_warm_s)

    def embed_seq(self, t: Target) -> dict[str, Any]:
        return self.wrk_scenario(t, "embed", 1, self.p.embed_s, 1.0)

    def embed_sat(self, t: Target) -> dict[str, Any]:
        return self.wrk_scenario(t, "embed", self.p.sat_conns, self.p.embed_s, 1.0)

    def chat_open(self, t: Target) -> dict[str, Any]:
        return uvloop.run(
            loadgen.open_loop(
                "127.0.0.1",
                t.port,
                self.request(t, "chat"),
                rate=self.p.open_rate,
                seconds=self.p.open_s,
                warmup=self.p.open_warm_s,
            )
        )

    def stream64(self, t: Target) -> dict[str, Any]:
        return uvloop.run(
            loadgen.sequential(
                "127.0.0.1",
                t.port,
                self.request(t, "stream"),
                seconds=self.p.stream_s,
                kind="stream",
                tokens=self.p.fast_tokens,
            )
        )

    def streams1000(self, t: Target) -> dict[str, Any]:
        pids = t.pids()
        sampler = loadgen.Sampler(rss_kb=lambda: procstat.rss_kb(pids), cpu_s=lambda: procstat.cpu_seconds(pids))
        return uvloop.run(
            loadgen.concurrent_streams(
                "127.0.0.1",
                t.port,
                self.request(t, "slow"),
                streams=self.p.streams,
                ramp=self.p.ramp_s,
                tokens=self.p.slow_tokens,
                first_token=self.p.slow_first_ms / 1000,
                interval=self.p.token_ms / 1000,
                sampler=sampler,
            )
        )

    def run(self) -> None:
        scenarios = [s for s in SCENARIOS if s in self.args.scenarios]
        gateways = self.targets[1:]
        for r in range(self.p.rounds):
            self.log(f"round {r + 1}/{self.p.rounds}")
            self.code.append(src_fingerprint())
            k = r % max(1, len(gateways))
            started: list[Target] = []
            try:
                self.start_target(self.upstream)
                started.append(self.upstream)
                time.sleep(self.p.pause_s)  # the previous round's processes are gone and their sockets closed
                for t in gateways[k:] + gateways[:k]:
                    self.start_target(t)
                    started.append(t)
                order = self.targets[r % len(self.targets) :] + self.targets[: r % len(self.targets)]
                for scenario in scenarios:
                    measure: Callable[[Target], dict[str, Any]] = getattr(self, scenario)
                    for t in order:
                        if not self.serves(t, scenario):  # Responses or Messages on a chat-only target
                            if r == 0:
                                self.log(f"  {scenario:19} {t.name:17} skipped: not served")
                            continue
                        time.sleep(self.p.pause_s)
                        began = time.perf_counter()
                        try:
                            result = measure(t)
                        except Exception as exc:
                            result = {"errors": 1, "error_samples": [f"{type(exc).__name__}: {exc}"], "failed": True}
                        result["wall_s"] = time.perf_counter() - began
                        self.record(t, scenario, result)
                        self.log(f"  {scenario:19} {t.name:17} {report.brief(scenario, result)}")
            finally:
                for t in reversed(started):
                    t.stop()


# --- environment ---------------------------------------------------------------------------------


def _cmd(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg": os.getloadavg(),
    }


def versions(litellm: str) -> dict[str, str]:
    from importlib import metadata

    sha = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"])
    pg = _cmd(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-c", "SHOW server_version"])
    redis = ""
    for line in _cmd(["redis-cli", "-h", "127.0.0.1", "INFO", "server"]).splitlines():
        if line.startswith("redis_version:"):
            redis = line.split(":", 1)[1].strip()
    wrk = _cmd(["wrk", "-v"]).splitlines()
    return {
        "python": platform.python_version(),
        "gatehouse": f"{metadata.version('gatehouse')} ({sha}{', src/ modified' if dirty else ''})",
        "litellm": litellm,
        "wrk": wrk[0].split(" [")[0] if wrk else "",
        "postgresql": pg.split()[0] if pg else "",
        "redis": redis,
        "uvloop": metadata.version("uvloop"),
        "uvicorn": metadata.version("uvicorn"),
    }


def src_fingerprint() -> str:
    """Gatehouse's source as a round runs it: the tree of src/ at HEAD, plus a hash of uncommitted changes and new
    files under src/. Tells whether the code changed between rounds (each round restarts Gatehouse from the working
    tree); a commit that leaves src/ as it was (tests, docs) does not count."""
    tree = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD:src"])
    diff = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD", "--", "src"], capture_output=True).stdout
    new = _cmd(["git", "-C", str(ROOT), "ls-files", "--others", "--exclude-standard", "--", "src"]).split()
    digest = hashlib.sha256(diff)
    for name in sorted(new):
        with contextlib.suppress(OSError):
            digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    return f"src {tree}+{digest.hexdigest()[:8]}" if diff or new else f"src {tree}"


def services_answer() -> bool:
    pg = _cmd(["psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-U", "postgres", "-c", "SELECT 1"])
    redis = _cmd(["redis-cli", "-h", "127.0.0.1", "PING"])
    return pg == "1" and redis == "PONG"


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every child


def command_line() -> str:
    args = " ".join(sys.argv[1:])
    if os.environ.get("MAKELEVEL"):
        return f'make bench BENCH_ARGS="{args}"' if args else "make bench"
    return f"python -m bench {args}".strip()


DOCS = ROOT / "docs" / "benchmarks.md"
SURFACES_DOCS = ROOT / "docs" / "benchmarks-surfaces.md"


def write_docs(path: Path, markdown: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown)
    print(f"bench: wrote {path}", file=sys.stderr)


def complete(data: dict[str, Any]) -> bool:
    """Whether a run measured every target and every scenario, as docs/benchmarks.md reports them."""
    measured = {s for runs in data["results"].values() for s in runs}
    return set(TARGETS) <= set(data["results"]) and set(SCENARIOS) <= measured


def publish(data: dict[str, Any], markdown: str, args: argparse.Namespace) -> None:
    """The report to --output (docs/benchmarks.md only from a complete run, so that a partial one does not drop
    the other results); the translated surfaces' page to --surfaces-output whenever the run measured them."""
    if args.no_docs:
        return
    if args.output or complete(data):
        write_docs(Path(args.output or DOCS), markdown)
    else:
        print(
            f"bench: a partial run (not every target and scenario) leaves {DOCS.relative_to(ROOT)} as it is; "
            "--output FILE writes its report",
            file=sys.stderr,
        )
    if report.has_surfaces(data):
        write_docs(Path(args.surfaces_output), report.render_surfaces(data))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="one short round, for development")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    parser.add_argument("--litellm-db", action="store_true", help="LiteLLM with PostgreSQL virtual keys (Prisma)")
    parser.add_argument(
        "--output",
        help="the markdown report (default docs/benchmarks.md, written only by a run of every target and scenario)",
    )
    parser.add_argument(
        "--surfaces-output",
        default=str(SURFACES_DOCS),
        help="the translated surfaces' page, written when the run measures them (default docs/benchmarks-surfaces.md)",
    )
    parser.add_argument("--no-docs", action="store_true", help="write no docs (results/ only)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, databases)")
    parser.add_argument("--render", metavar="JSON", help="only re-render the report of a results file")
    args = parser.parse_args()
    if args.render:
        data = json.loads(Path(args.render).read_text())
        markdown = report.render(data)
        publish(data, markdown, args)
        print(markdown)
        return
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.targets) - set(TARGETS) | set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown target or scenario: {', '.join(sorted(unknown))}")
    profile = Profile.quick() if args.quick else Profile()
    if args.rounds:
        profile.rounds = args.rounds
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    if "gatehouse-pg" in args.targets and not services_answer():
        sys.exit(
            "bench: gatehouse-pg needs PostgreSQL (trust login as postgres) and Redis on 127.0.0.1:5432 / :6379; "
            "start them, or leave gatehouse-pg out of --targets"
        )
    raise_fd_limit()
    litellm = ensure_litellm(which_uv()) if "litellm" in args.targets else "not measured"
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "machine": machine(),
        "versions": versions(litellm),
        "profile": asdict(profile),
    }
    bench = Bench(args, profile)
    meta["targets"] = {t.name: {"label": t.label, "note": t.note} for t in bench.targets}
    started = time.perf_counter()
    try:
        bench.prepare()
        bench.run()
    finally:
        bench.cleanup()
        if not args.keep:
            shutil.rmtree(bench.run_dir, ignore_errors=True)
    meta["code_per_round"] = bench.code
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    data = {"meta": meta, "results": bench.results}
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (results_dir / f"{stamp}.json").write_text(json.dumps(data, indent=1))
    markdown = report.render(data)
    (results_dir / f"{stamp}.md").write_text(markdown)
    print(markdown)
    publish(data, markdown, args)
    print(f"bench: raw results in {results_dir / (stamp + '.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
