"""Benchmark: httpx vs aiohttp as Gatehouse's upstream HTTP client.

Self-contained.  Starts a minimal, fast upstream in a child process on 127.0.0.1 and
drives it from this process (under uvloop) with one shared client of each library:

* POST /chat    -> ~400-byte JSON body (Content-Length)
* POST /stream  -> 64 SSE chunks (``data: {...}\\n\\n``, ~150 bytes each, one socket write
                   per chunk, chunked transfer encoding, no delay) then ``data: [DONE]\\n\\n``

Per client and round it measures

* on a fresh client (1 pooled connection), one request at a time:
  - chat: median / p99 latency (us) and client CPU per request (us)
  - stream: median time to read one whole stream (us), both "raw" relay
    (aiohttp ``content.iter_any()`` / httpx ``aiter_raw()``) and "lines"
    (aiohttp ``async for line in content`` / httpx ``aiter_lines()``)
* after filling the pool to 64 keep-alive connections (64 responses held open at once, as
  64 concurrent LLM streams would): sequential chat median latency again
* fixed-time throughput: chat with 64 concurrent tasks (requests/s, client CPU/request),
  streams with 32 concurrent tasks, raw and lines (streams/s, client CPU/stream)

Rounds are interleaved (client order alternates) and the table shows the median over
rounds.  CPU time is ``time.process_time()`` of this (client) process only; the 2-core
machine is shared with the upstream process.

Usage::

    uv run python bench/http_clients.py [--rounds N] [--seconds S] [--server raw|uvicorn]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson

# --------------------------------------------------------------------------------------
# Payloads (shared by server and clients)
# --------------------------------------------------------------------------------------

N_CHUNKS = 64
CHAT_CONCURRENCY = 64
STREAM_CONCURRENCY = 32
POOL_SIZE = max(CHAT_CONCURRENCY, STREAM_CONCURRENCY)

REQUEST_BODY = orjson.dumps(
    {
        "model": "llama-3.1-8b-instruct",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 64,
    }
)
REQUEST_HEADERS = {"content-type": "application/json", "authorization": "Bearer upstream-key"}


def _chat_body() -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-9f3c2a7e1b",
        "object": "chat.completion",
        "created": 1763700000,
        "model": "llama-3.1-8b-instruct",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today? "},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 24, "completion_tokens": 12, "total_tokens": 36},
    }
    raw = orjson.dumps(obj)
    obj["choices"][0]["message"]["content"] += "x" * max(0, 400 - len(raw))
    return orjson.dumps(obj)


def _sse_chunk(i: int) -> bytes:
    obj: dict[str, Any] = {
        "id": "cmpl-1",
        "object": "chat.completion.chunk",
        "model": "llama3",
        "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}],
    }
    event = b"data: " + orjson.dumps(obj) + b"\n\n"
    obj["choices"][0]["delta"]["content"] += "x" * max(0, 150 - len(event))
    return b"data: " + orjson.dumps(obj) + b"\n\n"


CHAT_BODY = _chat_body()
SSE_CHUNKS = [_sse_chunk(i) for i in range(N_CHUNKS)]
SSE_DONE = b"data: [DONE]\n\n"
STREAM_BYTES = sum(map(len, SSE_CHUNKS)) + len(SSE_DONE)
STREAM_LINES = N_CHUNKS + 1  # non-empty lines, last one is "data: [DONE]"


# --------------------------------------------------------------------------------------
# Upstream server (child process)
# --------------------------------------------------------------------------------------


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _serve_raw(sock: socket.socket) -> None:
    """Raw asyncio + httptools HTTP/1.1 server with pre-built responses."""
    import httptools
    import uvloop

    chat_resp = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"server: bench-upstream\r\n\r\n%b" % (len(CHAT_BODY), CHAT_BODY)
    )
    stream_head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\nserver: bench-upstream\r\n\r\n"
    )
    stream_writes = [_chunk(c) for c in SSE_CHUNKS] + [_chunk(SSE_DONE), b"0\r\n\r\n"]
    not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                assert self.transport is not None
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            url, self.url = self.url, b""
            assert self.transport is not None
            write = self.transport.write
            if url == b"/chat":
                write(chat_resp)
            elif url == b"/stream":
                write(stream_head)
                for w in stream_writes:  # one write per SSE event, no delay
                    write(w)
            else:
                write(not_found)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, sock=sock, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Minimal pure-ASGI upstream (used with ``--server uvicorn``)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    if path == "/chat":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(CHAT_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": CHAT_BODY})
    elif path == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        for c in SSE_CHUNKS:
            await send({"type": "http.response.body", "body": c, "more_body": True})
        await send({"type": "http.response.body", "body": SSE_DONE, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _serve_uvicorn(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        _asgi_app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=1024,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _serve(kind: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    print(sock.getsockname()[1], flush=True)  # tell the parent our port
    (_serve_uvicorn if kind == "uvicorn" else _serve_raw)(sock)


class Upstream:
    """The upstream child process (started and stopped by us, by its own handle)."""

    def __init__(self, kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", kind],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"upstream failed to start: {line!r}")
        self.port = int(line)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while True:  # wait until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)

    def cpu_seconds(self) -> float | None:
        """utime+stime of the upstream process (Linux /proc), for the server-load column."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------
# Client adapters: the same three operations for each library
# --------------------------------------------------------------------------------------


class BenchClient:
    name = ""

    async def chat(self) -> None:
        raise NotImplementedError

    async def stream_raw(self) -> None:
        raise NotImplementedError

    async def stream_lines(self) -> None:
        raise NotImplementedError

    async def stream_held(self, opened: Callable[[], None], gate: asyncio.Event) -> None:
        """Open a stream, call ``opened()``, wait for ``gate``, then drain it (used to fill the pool)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


def _check_stream_raw(nbytes: int) -> None:
    if nbytes != STREAM_BYTES:
        raise RuntimeError(f"stream: got {nbytes} bytes, want {STREAM_BYTES}")


def _check_stream_lines(nlines: int, last: bytes | str) -> None:
    if nlines != STREAM_LINES or last not in ("data: [DONE]", b"data: [DONE]"):
        raise RuntimeError(f"stream: got {nlines} lines ending {last!r}")


class HttpxClient(BenchClient):
    name = "httpx"

    def __init__(self, base: str, pool: int) -> None:
        import httpx

        self.chat_url = f"{base}/chat"
        self.stream_url = f"{base}/stream"
        self.client = httpx.AsyncClient(
            http1=True,
            http2=False,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=60.0),
            timeout=httpx.Timeout(30.0),
            trust_env=False,
        )

    async def chat(self) -> None:
        r = await self.client.post(self.chat_url, content=REQUEST_BODY, headers=REQUEST_HEADERS)
        if r.status_code != 200 or len(r.content) != len(CHAT_BODY):
            raise RuntimeError(f"chat: {r.status_code} {len(r.content)}")

    async def stream_raw(self) -> None:
        n = 0
        async with self.client.stream("POST", self.stream_url, content=REQUEST_BODY, headers=REQUEST_HEADERS) as r:
            async for chunk in r.aiter_raw():
                n += len(chunk)
        _check_stream_raw(n)

    async def stream_lines(self) -> None:
        n, last = 0, ""
        async with self.client.stream("POST", self.stream_url, content=REQUEST_BODY, headers=REQUEST_HEADERS) as r:
            async for line in r.aiter_lines():
                if line:
                    n += 1
                    last = line
        _check_stream_lines(n, last)

    async def stream_held(self, opened: Callable[[], None], gate: asyncio.Event) -> None:
        async with self.client.stream("POST", self.stream_url, content=REQUEST_BODY, headers=REQUEST_HEADERS) as r:
            opened()
            await gate.wait()
            await r.aread()

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpClient(BenchClient):
    name = "aiohttp"

    def __init__(self, base: str, pool: int) -> None:
        import aiohttp

        self.chat_url = f"{base}/chat"
        self.stream_url = f"{base}/stream"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool, keepalive_timeout=60.0),
            timeout=aiohttp.ClientTimeout(total=30.0),
        )

    async def chat(self) -> None:
        async with self.session.post(self.chat_url, data=REQUEST_BODY, headers=REQUEST_HEADERS) as r:
            body = await r.read()
            if r.status != 200 or len(body) != len(CHAT_BODY):
                raise RuntimeError(f"chat: {r.status} {len(body)}")

    async def stream_raw(self) -> None:
        n = 0
        async with self.session.post(self.stream_url, data=REQUEST_BODY, headers=REQUEST_HEADERS) as r:
            async for chunk in r.content.iter_any():
                n += len(chunk)
        _check_stream_raw(n)

    async def stream_lines(self) -> None:
        n, last = 0, b""
        async with self.session.post(self.stream_url, data=REQUEST_BODY, headers=REQUEST_HEADERS) as r:
            async for line in r.content:  # readline(); keeps the trailing b"\n"
                if len(line) > 1:
                    n += 1
                    last = line
        _check_stream_lines(n, last.rstrip(b"\r\n"))

    async def stream_held(self, opened: Callable[[], None], gate: asyncio.Event) -> None:
        async with self.session.post(self.stream_url, data=REQUEST_BODY, headers=REQUEST_HEADERS) as r:
            opened()
            await gate.wait()
            await r.read()

    async def aclose(self) -> None:
        await self.session.close()


CLIENTS: dict[str, type[BenchClient]] = {"httpx": HttpxClient, "aiohttp": AiohttpClient}


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool


C, SC = CHAT_CONCURRENCY, STREAM_CONCURRENCY
METRICS = [
    Metric("chat_seq_p50", "chat, sequential, 1 conn: median latency (us)", False),
    Metric("chat_seq_p99", "chat, sequential, 1 conn: p99 latency (us)", False),
    Metric("chat_seq_cpu", "chat, sequential, 1 conn: client CPU / request (us)", False),
    Metric("chat_seq_pool_p50", f"chat, sequential, {POOL_SIZE} idle conns: median latency (us)", False),
    Metric("chat_conc_rps", f"chat, {C} concurrent: requests/s", True),
    Metric("chat_conc_cpu", f"chat, {C} concurrent: client CPU / request (us)", False),
    Metric("stream_raw_p50", "stream raw chunks, sequential: median per stream (us)", False),
    Metric("stream_lines_p50", "stream lines, sequential: median per stream (us)", False),
    Metric("stream_raw_sps", f"stream raw chunks, {SC} concurrent: streams/s", True),
    Metric("stream_raw_cpu", f"stream raw chunks, {SC} concurrent: client CPU / stream (us)", False),
    Metric("stream_lines_sps", f"stream lines, {SC} concurrent: streams/s", True),
    Metric("stream_lines_cpu", f"stream lines, {SC} concurrent: client CPU / stream (us)", False),
]


async def fill_pool(client: BenchClient, n: int) -> None:
    """Hold ``n`` responses open at once so the pool ends up with ``n`` idle keep-alive connections:
    the steady state of a gateway relaying ``n`` concurrent (seconds-long) LLM streams."""
    gate = asyncio.Event()
    opened = 0

    def on_open() -> None:
        nonlocal opened
        opened += 1
        if opened == n:
            gate.set()

    await asyncio.wait_for(asyncio.gather(*(client.stream_held(on_open, gate) for _ in range(n))), 30)


def _open_fds() -> int:
    """Open file descriptors of this process (Linux); its delta ~ sockets held by the client pool."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _p99(samples: list[int]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


async def sequential(op: Callable[[], Awaitable[None]], seconds: float) -> tuple[float, float, float]:
    """One request at a time. Returns (median us, p99 us, client CPU us / request)."""
    gc.collect()
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    cpu0 = time.process_time()
    while True:
        t0 = clock()
        await op()
        t1 = clock()
        samples.append(t1 - t0)
        if t1 >= deadline:
            break
    cpu = time.process_time() - cpu0
    return statistics.median(samples) / 1e3, _p99(samples) / 1e3, cpu / len(samples) * 1e6


async def concurrent(
    op: Callable[[], Awaitable[None]], concurrency: int, seconds: float, upstream: Upstream
) -> tuple[float, float, float | None]:
    """``concurrency`` tasks loop for ``seconds``. Returns (ops/s, client CPU us / op, server CPU %)."""
    gc.collect()
    counts = [0] * concurrency
    clock = time.perf_counter
    deadline = clock() + seconds

    async def worker(i: int) -> None:
        n = 0
        while clock() < deadline:
            await op()
            n += 1
        counts[i] = n

    srv0 = upstream.cpu_seconds()
    cpu0 = time.process_time()
    t0 = clock()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = clock() - t0
    cpu = time.process_time() - cpu0
    srv1 = upstream.cpu_seconds()
    total = sum(counts)
    srv_pct = None if srv0 is None or srv1 is None else (srv1 - srv0) / elapsed * 100
    return total / elapsed, cpu / total * 1e6, srv_pct


async def run_client(name: str, upstream: Upstream, seconds: float) -> dict[str, float]:
    fds0 = _open_fds()
    client = CLIENTS[name](upstream.base, POOL_SIZE)
    try:
        r: dict[str, float] = {}
        # 1) Fresh client, one request at a time: per-request cost on a single pooled connection.
        #    (Warm-up also validates every response shape.)
        for op in (client.chat, client.stream_raw, client.stream_lines):
            for _ in range(20):
                await op()
        r["chat_seq_p50"], r["chat_seq_p99"], r["chat_seq_cpu"] = await sequential(client.chat, seconds)
        r["stream_raw_p50"], _, _ = await sequential(client.stream_raw, seconds / 2)
        r["stream_lines_p50"], _, _ = await sequential(client.stream_lines, seconds / 2)

        # 2) Fill the pool to its size (as sustained concurrent traffic does), then sequential
        #    again, now with many idle keep-alive connections in the pool.
        await fill_pool(client, POOL_SIZE)
        r["_conns"] = _open_fds() - fds0
        r["chat_seq_pool_p50"], _, _ = await sequential(client.chat, seconds / 2)

        # 3) Fixed-time throughput at concurrency.
        r["chat_conc_rps"], r["chat_conc_cpu"], srv_chat = await concurrent(
            client.chat, CHAT_CONCURRENCY, seconds, upstream
        )
        r["stream_raw_sps"], r["stream_raw_cpu"], _ = await concurrent(
            client.stream_raw, STREAM_CONCURRENCY, seconds, upstream
        )
        r["stream_lines_sps"], r["stream_lines_cpu"], srv_lines = await concurrent(
            client.stream_lines, STREAM_CONCURRENCY, seconds, upstream
        )
        r["_srv_chat"] = srv_chat if srv_chat is not None else float("nan")
        r["_srv_lines"] = srv_lines if srv_lines is not None else float("nan")
        return r
    finally:
        await client.aclose()


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def render_table(results: dict[str, list[dict[str, float]]], rounds: int) -> str:
    lines = [
        "| metric | better | httpx | aiohttp | aiohttp/httpx | aiohttp better in |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in METRICS:
        hx = [r[m.key] for r in results["httpx"]]
        ah = [r[m.key] for r in results["aiohttp"]]
        wins = sum((a > h) if m.higher_is_better else (a < h) for a, h in zip(ah, hx, strict=True))
        mh, ma = statistics.median(hx), statistics.median(ah)
        lines.append(
            f"| {m.label} | {'higher' if m.higher_is_better else 'lower'} | {_fmt(mh)} | {_fmt(ma)} "
            f"| {ma / mh:.2f} | {wins}/{rounds} rounds |"
        )
    return "\n".join(lines)


async def bench(args: argparse.Namespace, upstream: Upstream) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CLIENTS}
    order = list(CLIENTS)
    for rnd in range(args.rounds):
        names = order if rnd % 2 == 0 else order[::-1]
        for name in names:
            t0 = time.perf_counter()
            r = await run_client(name, upstream, args.seconds)
            results[name].append(r)
            print(
                f"round {rnd + 1}/{args.rounds} {name:>7}: "
                f"chat p50 {r['chat_seq_p50']:.0f}us p99 {r['chat_seq_p99']:.0f}us "
                f"(with ~{r['_conns']:.0f} idle conns: p50 {r['chat_seq_pool_p50']:.0f}us), "
                f"{r['chat_conc_rps']:,.0f} req/s @{r['chat_conc_cpu']:.0f}us CPU, "
                f"stream p50 raw {r['stream_raw_p50']:.0f}us lines {r['stream_lines_p50']:.0f}us, "
                f"{r['stream_lines_sps']:,.0f} lines-streams/s @{r['stream_lines_cpu']:.0f}us CPU "
                f"(server CPU {r['_srv_chat']:.0f}%/{r['_srv_lines']:.0f}%) "
                f"[{time.perf_counter() - t0:.1f}s]",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=1.2, help="duration of each timed phase (default 1.2)")
    parser.add_argument(
        "--server",
        choices=["raw", "uvicorn"],
        default="raw",
        help="upstream: raw asyncio+httptools (default, fastest) or pure ASGI app under uvicorn",
    )
    parser.add_argument("--serve", choices=["raw", "uvicorn"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        _serve(args.serve)
        return
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")

    import aiohttp
    import httpx
    import uvloop

    est = args.rounds * len(CLIENTS) * (5.5 * args.seconds + 0.5)
    print(
        f"# httpx {httpx.__version__} vs aiohttp {aiohttp.__version__} | uvloop {uvloop.__version__} | "
        f"Python {platform.python_version()} | {os.cpu_count()} CPUs | upstream: {args.server} | "
        f"{args.rounds} rounds x {args.seconds}s phases (~{est:.0f}s)",
        flush=True,
    )
    upstream = Upstream(args.server)
    try:
        t0 = time.perf_counter()
        results = uvloop.run(bench(args, upstream))
        elapsed = time.perf_counter() - t0
    finally:
        upstream.stop()

    print()
    print(f"Median of {args.rounds} interleaved rounds ({elapsed:.0f}s):")
    print()
    print(render_table(results, args.rounds))


if __name__ == "__main__":
    main()
