"""What tracing costs per request: Gatehouse's app driven in-process over ASGI (no HTTP client in the measured
path) in front of the bench's fake upstream (over real HTTP, so the traceparent header is sent when on), one
request at a time, in a fresh interpreter per measurement.

    python -m bench.tracing --base /tmp/otel-base        # base tree vs this tree (off) vs this tree (on)

`--base` is a second source tree (e.g. `git worktree add /tmp/otel-base <commit>`) whose cost is the reference:
the code without the tracing hooks. Each round runs every variant once, in turn (interleaved, so a machine busy
with something else weighs on all of them alike); the report gives each variant's median over the rounds of its
median per-request time, and its CPU time per request. With tracing on, spans go to an OTLP/HTTP receiver in
this process (tests/support/otlp_receiver.py), as they would to a collector.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run inside the measured interpreter: sys.path[0:0] = the tree's src and the tree (for tests.conftest).
MEASURE = """
import asyncio, json, resource, statistics, sys, time
from pathlib import Path

TREE, UPSTREAM, REQUESTS, WARMUP, TRACING, STREAM = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5] == "on", sys.argv[6] == "stream"
sys.path[0:0] = [TREE + "/src", TREE]
import gatehouse
assert gatehouse.__file__.startswith(TREE), gatehouse.__file__
from asgi_lifespan import LifespanManager
from gatehouse.app import create_app
from tests.conftest import make_settings
from tests.support.server import ADMIN_KEY

async def main(directory: Path) -> None:
    config = directory / "gatehouse.yaml"
    config.write_text(json.dumps({"upstreams": [{"name": "bench", "kind": "openai", "base_url": UPSTREAM,
                                                  "models": ["bench-fast"]}]}))
    extra = {"otel_enabled": True} if TRACING else {}
    # As bench/targets.py sets them: checked on every request, never binding.
    extra.update(rate_limit_per_minute=10**9, default_messages_per_day=10**9, default_tokens_per_day=10**12)
    settings = make_settings(f"sqlite+aiosqlite:///{directory}/gatehouse.db", directory, gatehouse_config=config,
                             log_file=directory / "gatehouse.log", **extra)
    app = create_app(settings)
    body = json.dumps({"model": "bench-fast", "stream": STREAM, "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    headers = [(b"host", b"gatehouse"), (b"content-type", b"application/json"),
               (b"authorization", b"Bearer " + ADMIN_KEY.encode()), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "root_path": "",
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}

    async def one(asgi) -> None:
        sent = False
        status = 0
        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
        await asgi(dict(scope, state={}), receive, send)
        assert status == 200, status

    async with LifespanManager(app, startup_timeout=60) as manager:
        for _ in range(WARMUP):
            await one(manager.app)
        times = []
        cpu = time.process_time()
        for _ in range(REQUESTS):
            started = time.perf_counter()
            await one(manager.app)
            times.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu
    print(json.dumps({"median_us": statistics.median(times) * 1e6, "mean_us": statistics.fmean(times) * 1e6,
                      "cpu_us": cpu / REQUESTS * 1e6}))

asyncio.run(main(Path(sys.argv[7])))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the fake upstream did not listen on port {port}")


def measure(
    tree: Path, upstream: str, tracing: bool, stream: bool, requests: int, env: dict[str, str]
) -> dict[str, float]:
    """One measurement in a fresh interpreter: the median and mean time, and CPU time, per request."""
    with tempfile.TemporaryDirectory(prefix="gh-trace-bench-") as directory:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(tree), upstream, str(requests), str(requests // 5),
             "on" if tracing else "off", "stream" if stream else "whole", directory],
            capture_output=True, text=True, timeout=600, env=env, cwd=directory,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def span_cost(requests: int) -> dict[str, float]:
    """CPU per request of what tracing adds, alone (no app, no network): the spans of one gateway request as
    core/otel.py makes them (server, three internal, one client with its traceparent), then their OTLP/protobuf
    encoding as the exporter does it before posting."""
    sys.path.insert(0, str(ROOT / "src"))
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gatehouse.core.otel import OtelTracer, ServerSpans, _resource

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource("bench"))
    # SimpleSpanProcessor: the spans are at hand synchronously (the app batches them in a thread instead).
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider, "bench")
    server = ServerSpans(lambda scope, receive, send: _one_request(tracer), tracer.tracer)  # type: ignore[arg-type]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "scheme": "http",
             "http_version": "1.1", "headers": [(b"user-agent", b"bench")], "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 40000)}  # fmt: skip
    import asyncio

    async def run(n: int) -> float:
        started = time.process_time()
        for _ in range(n):
            await server(dict(scope), None, None)  # type: ignore[arg-type]
        return time.process_time() - started

    asyncio.run(run(requests // 5))  # warm-up
    exporter.clear()
    spans_cpu = asyncio.run(run(requests))
    finished = exporter.get_finished_spans()
    started = time.process_time()
    for start in range(0, len(finished), 512):  # the batch processor's default batch size
        encode_spans(finished[start : start + 512]).SerializeToString()
    encode_cpu = time.process_time() - started
    return {
        "spans_per_request": len(finished) / requests,
        "spans_cpu_us": spans_cpu / requests * 1e6,
        "encode_cpu_us": encode_cpu / requests * 1e6,
    }


async def _one_request(tracer: object) -> None:
    """The spans core/otel.py opens for one gateway request, with the attributes Gatehouse sets."""
    for name in ("gatehouse.authentication", "gatehouse.admission"):
        with tracer.span(name, {"gen_ai.request.model": "bench-fast"}):  # type: ignore[attr-defined]
            pass
    upstream = tracer.client_span(  # type: ignore[attr-defined]
        "chat bench-fast",
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "bench-fast",
         "gatehouse.upstream": "bench", "http.request.method": "POST", "server.address": "127.0.0.1",
         "server.port": 8000, "url.full": "http://127.0.0.1:8000/v1/chat/completions", "gen_ai.request.stream": False},
    )  # fmt: skip
    upstream.set_attribute("http.response.status_code", 200)
    upstream.add_event("first_byte")
    for key, value in (("gen_ai.usage.input_tokens", 9), ("gen_ai.usage.output_tokens", 16)):
        upstream.set_attribute(key, value)
    upstream.set_attribute("gen_ai.response.time_to_first_chunk", 0.0004)
    upstream.add_event("gen_ai.first_chunk")
    upstream.end()
    with tracer.span("gatehouse.settlement"):  # type: ignore[attr-defined]
        pass


def main() -> None:
    """Measure, interleaved, and print the medians (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", type=Path, help="the source tree without the tracing hooks (required but with --span-cost)"
    )
    parser.add_argument("--tree", type=Path, default=ROOT, help="the source tree with them (default: this one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per run (a fifth more warm up)")
    parser.add_argument("--stream", action="store_true", help="streamed chats (default: whole answers)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--span-cost", action="store_true", help="only the spans' own CPU cost, no app (see span_cost)")
    args = parser.parse_args()
    if args.span_cost:
        print(json.dumps({k: round(v, 2) for k, v in span_cost(args.requests).items()}))
        return
    if args.base is None:
        parser.error("--base is required: a source tree without the tracing hooks")
    sys.path.insert(0, str(ROOT))
    from tests.support.otlp_receiver import run_otlp_receiver

    port = _free_port()
    variants = {"base (no hooks)": (args.base, False), "off": (args.tree, False), "on": (args.tree, True)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with ExitStack() as stack:
        fake = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fakeup.py"), "--port", str(port)])
        stack.callback(fake.wait)
        stack.callback(fake.terminate)
        _wait_for(port)
        receiver = stack.enter_context(run_otlp_receiver())
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        }
        for round_number in range(args.rounds):
            for name, (tree, tracing) in variants.items():
                result = measure(tree, f"http://127.0.0.1:{port}", tracing, args.stream, args.requests, env)
                results[name].append(result)
                print(f"round {round_number + 1} {name}: {result}", file=sys.stderr)
        spans = len(receiver.received())
    summary = {
        name: {
            "median_us": round(statistics.median(r["median_us"] for r in runs), 1),
            "cpu_us": round(statistics.median(r["cpu_us"] for r in runs), 1),
            "medians_us": [round(r["median_us"], 1) for r in runs],
        }
        for name, runs in results.items()
    }
    if args.json:
        print(json.dumps({"stream": args.stream, "requests": args.requests, "spans_received": spans, **summary}))
        return
    base = summary["base (no hooks)"]["median_us"]
    print(f"{'streamed' if args.stream else 'whole'} chats, {args.rounds} rounds x {args.requests} requests")
    for name, row in summary.items():
        delta = row["median_us"] - base
        print(f"  {name:16} median {row['median_us']:8.1f} µs ({delta:+7.1f})  cpu {row['cpu_us']:8.1f} µs  "
              f"rounds {row['medians_us']}")  # fmt: skip
    print(f"  spans received with tracing on: {spans}")


if __name__ == "__main__":
    main()
