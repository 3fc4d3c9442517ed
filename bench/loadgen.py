"""Cheap HTTP/1.1 load generation for `make bench`: raw asyncio protocols + httptools on uvloop.

What wrk cannot do: an open-loop (constant rate) run whose latency counts from each request's scheduled
send time, streams with time to first token, and many concurrent slow streams while the server's memory
and CPU are sampled. Every response is checked: status 200, and for streams the final `data: [DONE]`
and the expected number of content tokens.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import orjson

# The first content token of an OpenAI stream: a non-empty "content" string (gateways may first send
# a chunk with the role and an empty content).
CONTENT_RE = re.compile(rb'"content": ?"[^"]')
DONE = b"data: [DONE]"
EVENT = b"data: {"
LATE = "no answer in time"


def build_request(
    host: str,
    port: int,
    path: str,
    body: Any,
    key: str | None,
    *,
    key_header: str = "Authorization",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A POST of `body` as JSON; the key as `Authorization: Bearer <key>`, or bare in another header
    (`x-api-key`, as Anthropic's clients send it); `headers` added as they are."""
    payload = orjson.dumps(body)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: */*",
        f"Content-Length: {len(payload)}",
    ]
    if key:
        head.append(f"Authorization: Bearer {key}" if key_header.lower() == "authorization" else f"{key_header}: {key}")
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


@dataclass
class Exchange:
    """One request and what came back."""

    start: float  # scheduled (open loop) or actual send time
    stream: bool = False
    status: int = 0
    first: float = 0.0  # first content token (streams)
    end: float = 0.0
    body: bytearray = field(default_factory=bytearray)
    tail: bytes = b""  # last bytes seen, to find a token split across reads
    events: int = 0
    error: str = ""
    future: asyncio.Future[Exchange] | None = None

    @property
    def ok(self) -> bool:
        return not self.error


class Conn(asyncio.Protocol):
    """One keep-alive client connection; one request at a time."""

    def __init__(self, on_idle: Callable[[Conn], None] | None = None) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: Exchange | None = None
        self.closed = False
        self.keep_alive = True
        self.on_idle = on_idle
        self.on_event: Callable[[int], None] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.current is not None:
            self._finish(f"connection lost: {exc or 'closed by server'}")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(f"bad HTTP: {exc}")
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self.current is not None:
            self.current.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        ex = self.current
        if ex is None:
            return
        ex.body += data
        if ex.stream:
            events = data.count(EVENT)
            ex.events += events
            if self.on_event is not None and events:
                self.on_event(events)
            if not ex.first and CONTENT_RE.search(ex.tail + data):
                ex.first = time.perf_counter()
            ex.tail = data[-32:]

    def on_message_complete(self) -> None:
        self._finish("")
        if not self.keep_alive and self.transport is not None:
            self.transport.close()

    # requests
    def send(self, request: bytes, ex: Exchange) -> asyncio.Future[Exchange]:
        assert self.transport is not None
        assert self.current is None
        ex.future = asyncio.get_running_loop().create_future()
        self.current = ex
        self.transport.write(request)
        return ex.future

    def _finish(self, error: str) -> None:
        ex, self.current = self.current, None
        if ex is None:
            return
        ex.end = time.perf_counter()
        if error:
            ex.error = error
        elif ex.status != 200:
            ex.error = f"status {ex.status}"
        if ex.future is not None and not ex.future.done():
            ex.future.set_result(ex)
        if self.on_idle is not None and not self.closed:
            self.on_idle(self)


async def connect(host: str, port: int, on_idle: Callable[[Conn], None] | None = None) -> Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: Conn(on_idle), host, port)
    return proto


def check_chat(ex: Exchange) -> None:
    """A non-streamed chat answer must carry a message."""
    if ex.ok and b'"choices"' not in ex.body:
        ex.error = "no choices in answer"


def _answer_text(ex: Exchange, tokens: int, what: str, text: str | None) -> None:
    """The fake upstream's answer is `tokens` tokens "tok0 tok1 ..."; a translated answer must carry them all."""
    expected = "".join((" tok" if i else "tok") + str(i) for i in range(tokens))
    if text != expected:
        shown = text if text is None or len(text) < 60 else text[:57] + "..."
        ex.error = f"{what}: text {shown!r}, expected the {tokens} tokens of the upstream's answer"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json_body(ex: Exchange) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(ex.body)
    except orjson.JSONDecodeError:
        ex.error = "answer is not JSON"
        return None
    if not isinstance(obj, dict):
        ex.error = "answer is not a JSON object"
        return None
    return obj


def check_responses(ex: Exchange, tokens: int, store: bool) -> None:
    """A non-streamed Response: object response, status completed, `store` as asked, one assistant message
    whose output_text is the upstream's answer, usage in input/output tokens."""
    if not ex.ok:
        return
    obj = _json_body(ex)
    if obj is None:
        return
    output = obj.get("output")
    message = output[0] if isinstance(output, list) and len(output) == 1 and isinstance(output[0], dict) else {}
    content = message.get("content")
    part = content[0] if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict) else {}
    usage = _dict(obj.get("usage"))
    if obj.get("object") != "response" or not str(obj.get("id", "")).startswith("resp_"):
        ex.error = f"not a Response object: {bytes(ex.body[:120])!r}"
    elif obj.get("status") != "completed":
        ex.error = f"Response status {obj.get('status')!r}, expected 'completed'"
    elif obj.get("store") is not store:
        ex.error = f"Response store {obj.get('store')!r}, expected {store}"
    elif message.get("type") != "message" or message.get("role") != "assistant" or part.get("type") != "output_text":
        ex.error = f"Response output is not one assistant message with output_text: {output!r:.160}"
    elif usage.get("output_tokens") != tokens or not usage.get("input_tokens"):
        ex.error = f"Response usage {usage!r}, expected {tokens} output tokens and some input tokens"
    else:
        _answer_text(ex, tokens, "Response", part.get("text"))


def check_messages(ex: Exchange, tokens: int) -> None:
    """A non-streamed Anthropic Message: type message, role assistant, one text block holding the upstream's
    answer, stop_reason end_turn, usage in input/output tokens."""
    if not ex.ok:
        return
    obj = _json_body(ex)
    if obj is None:
        return
    content = obj.get("content")
    block = content[0] if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict) else {}
    usage = _dict(obj.get("usage"))
    if obj.get("type") != "message" or obj.get("role") != "assistant":
        ex.error = f"not an assistant Message: {bytes(ex.body[:120])!r}"
    elif block.get("type") != "text":
        ex.error = f"Message content is not one text block: {content!r:.160}"
    elif obj.get("stop_reason") != "end_turn":
        ex.error = f"Message stop_reason {obj.get('stop_reason')!r}, expected 'end_turn'"
    elif usage.get("output_tokens") != tokens or not usage.get("input_tokens"):
        ex.error = f"Message usage {usage!r}, expected {tokens} output tokens and some input tokens"
    else:
        _answer_text(ex, tokens, "Message", block.get("text"))


def check_embed(ex: Exchange) -> None:
    if ex.ok and b'"embedding"' not in ex.body:
        ex.error = "no embedding in answer"


def check_stream(ex: Exchange, tokens: int) -> None:
    """A stream must end with [DONE] and carry `tokens` content tokens."""
    if not ex.ok:
        return
    if DONE not in ex.body:
        ex.error = "stream without [DONE]"
        return
    found = len(CONTENT_RE.findall(ex.body))
    if found != tokens:
        ex.error = f"stream with {found} content tokens, expected {tokens}"
    elif not ex.first:
        ex.error = "stream without a content token"


def percentiles(values: list[float], points: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles, keyed p50, p90, p99, p999."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        out["p" + f"{p:g}".replace(".", "")] = ordered[rank - 1]
    return out


def _errors(exchanges: list[Exchange]) -> tuple[int, list[str]]:
    bad = [e.error for e in exchanges if e.error]
    return len(bad), sorted(set(bad))[:5]


# --- sequential requests -----------------------------------------------------------------------


async def sequential(
    host: str,
    port: int,
    request: bytes,
    *,
    count: int = 0,
    seconds: float = 0.0,
    kind: str = "chat",
    tokens: int = 0,
    detail: bool = False,
) -> dict[str, Any]:
    """Requests one at a time on one keep-alive connection, for `count` requests or `seconds`.

    kind: chat, embed, stream (then TTFT and total per stream are reported, in ms), or the translated surfaces'
    answers, each fully parsed (for probes): responses (stored), responses_nostore, messages. detail: an error
    carries the start of the answer's body (for probes: bodies differ, so their errors would no longer group)."""
    conn = await connect(host, port)
    exchanges: list[Exchange] = []
    deadline = time.perf_counter() + seconds
    try:
        while (count and len(exchanges) < count) or (seconds and time.perf_counter() < deadline):
            if conn.closed:
                conn = await connect(host, port)
            ex = Exchange(start=time.perf_counter(), stream=kind == "stream")
            try:
                await asyncio.wait_for(conn.send(request, ex), 60)
            except TimeoutError:
                ex.error = "timeout"
                if conn.transport is not None:
                    conn.transport.close()
            if kind == "stream":
                check_stream(ex, tokens)
            elif kind == "embed":
                check_embed(ex)
            elif kind in ("responses", "responses_nostore"):
                check_responses(ex, tokens, store=kind == "responses")
            elif kind == "messages":
                check_messages(ex, tokens)
            else:
                check_chat(ex)
            if detail and ex.error and ex.body and not ex.stream:
                ex.error += f": {bytes(ex.body[:300]).decode(errors='replace')}"
            exchanges.append(ex)
    finally:
        if conn.transport is not None:
            conn.transport.close()
    errors, samples = _errors(exchanges)
    good = [e for e in exchanges if e.ok]
    result: dict[str, Any] = {"requests": len(exchanges), "errors": errors, "error_samples": samples}
    result["latency_ms"] = percentiles([(e.end - e.start) * 1000 for e in good])
    if kind == "stream":
        result["ttft_ms"] = percentiles([(e.first - e.start) * 1000 for e in good])
    return result


# --- open loop ---------------------------------------------------------------------------------


async def open_loop(
    host: str,
    port: int,
    request: bytes,
    *,
    rate: float,
    seconds: float,
    warmup: float = 1.0,
    max_conns: int = 256,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Request i is due at t0 + i/rate, whatever happened to earlier ones (wrk2-style); its latency
    counts from that scheduled time, so a stalled server is charged for the queue it causes.

    Requests go out over a pool of keep-alive connections, a new one opened when none is idle, up to
    `max_conns`; past that, due requests wait in a queue for the next idle connection (still timed from
    their due time). A request not answered within `timeout` of its due time counts as an error: the
    target cannot sustain the rate."""
    loop = asyncio.get_running_loop()
    idle: list[Conn] = []
    conns: list[Conn] = []
    backlog: collections.deque[Exchange] = collections.deque()

    def back(conn: Conn) -> None:
        if not conn.keep_alive:
            return
        if backlog:
            conn.send(request, backlog.popleft())
        else:
            idle.append(conn)

    async def opened(ex: Exchange) -> None:
        try:
            conn = await connect(host, port, back)
        except OSError as exc:
            ex.error, ex.end = f"connect: {exc}", time.perf_counter()
            return
        conns.append(conn)
        conn.send(request, ex)

    for _ in range(4):
        conns.append(await connect(host, port, back))
    idle.extend(conns)
    exchanges: list[Exchange] = []
    lag: list[float] = []
    total = int((warmup + seconds) * rate)
    first_measured = int(warmup * rate)
    opening: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        ex = Exchange(start=due)
        exchanges.append(ex)
        if i >= first_measured:
            lag.append(time.perf_counter() - due)
        while idle and idle[-1].closed:
            idle.pop()
        if idle:
            idle.pop().send(request, ex)
        elif len(conns) + len(opening) < max_conns:
            opening.append(loop.create_task(opened(ex)))
        else:
            backlog.append(ex)
    end = time.perf_counter() + timeout
    while time.perf_counter() < end and any(not e.end for e in exchanges):
        await asyncio.sleep(0.05)
    for task in opening:
        task.cancel()
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    measured = exchanges[first_measured:]
    for ex in measured:
        if not ex.end or ex.end - ex.start > timeout:
            ex.error = LATE
        check_chat(ex)
    late = sum(1 for e in measured if e.error.startswith(LATE))
    errors, samples = _errors([e for e in measured if not e.error.startswith(LATE)])
    good = [(e.end - e.start) * 1000 for e in measured if e.ok]
    # Percentiles over answered and unanswered requests alike, an unanswered one counted as `timeout`:
    # leaving them out would report only the lucky ones of an overloaded target.
    served = [e.end for e in exchanges if e.end and e.status == 200]  # in time or late, warm-up included
    return {
        "requests": len(measured),
        "rate": rate,
        "achieved_rps": len(good) / seconds,
        "served_rps": len(served) / (max(served) - t0) if served else 0.0,
        "late": late,
        "timeout_ms": timeout * 1000,
        "errors": errors,
        "error_samples": samples,
        "connections": len(conns),
        "latency_ms": percentiles(good + [timeout * 1000] * late),
        "send_lag_ms": percentiles([x * 1000 for x in lag]),
    }


# --- many concurrent slow streams --------------------------------------------------------------


@dataclass
class Sampler:
    """Reads the target's resident memory and CPU while streams are open."""

    rss_kb: Callable[[], int]
    cpu_s: Callable[[], float]


async def concurrent_streams(
    host: str,
    port: int,
    request: bytes,
    *,
    streams: int,
    ramp: float,
    tokens: int,
    first_token: float,
    interval: float,
    sampler: Sampler,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Open `streams` streams, one every ramp/streams seconds, each on its own connection; sample the
    target's RSS and CPU at idle and while all are open (after the last first token is due, before the
    first stream can end)."""
    idle_rss = sampler.rss_kb()
    events = [0]

    def count(n: int) -> None:
        events[0] += n

    exchanges: list[Exchange] = []
    open_now = [0]

    async def one(i: int) -> None:
        await asyncio.sleep(i * ramp / streams)
        ex = Exchange(start=time.perf_counter(), stream=True)
        exchanges.append(ex)
        try:
            conn = await connect(host, port)
        except OSError as exc:
            ex.error = f"connect: {exc}"
            ex.end = time.perf_counter()
            return
        conn.on_event = count
        open_now[0] += 1
        try:
            await asyncio.wait_for(conn.send(request, ex), timeout)
        except TimeoutError:
            ex.error = "timeout"
        finally:
            open_now[0] -= 1
            if conn.transport is not None:
                conn.transport.close()
        check_stream(ex, tokens)

    started = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    # The window: every stream is open and past its first token; the first stream is still going.
    window_start = ramp + first_token + 1.0
    window_end = first_token + (tokens - 1) * interval - 0.5
    samples: list[int] = []
    opened: list[int] = []
    cpu_a = cpu_b = 0.0
    events_a = events_b = 0
    t_a = t_b = 0.0
    if window_end - window_start >= 1.0:
        await asyncio.sleep(max(0.0, started + window_start - time.perf_counter()))
        cpu_a, events_a, t_a = sampler.cpu_s(), events[0], time.perf_counter()
        while time.perf_counter() < started + window_end:
            samples.append(sampler.rss_kb())
            opened.append(open_now[0])
            await asyncio.sleep(0.5)
        cpu_b, events_b, t_b = sampler.cpu_s(), events[0], time.perf_counter()
    await asyncio.gather(*tasks)
    errors, error_samples = _errors(exchanges)
    good = [e for e in exchanges if e.ok]
    result: dict[str, Any] = {
        "streams": streams,
        "errors": errors,
        "error_samples": error_samples,
        "ttft_ms": percentiles([(e.first - e.start) * 1000 for e in good]),
        "total_ms": percentiles([(e.end - e.start) * 1000 for e in good]),
        "idle_rss_kb": idle_rss,
    }
    if samples:
        samples.sort()
        held = samples[len(samples) // 2]
        open_min = min(opened)
        wall = t_b - t_a
        cpu = cpu_b - cpu_a
        relayed = events_b - events_a
        result |= {
            "open_min": open_min,
            "held_rss_kb": held,
            "rss_per_stream_kb": (held - idle_rss) / max(1, open_min),
            "cpu_core_pct": 100 * cpu / wall,
            "events_per_s": relayed / wall,
            "cpu_us_per_token": 1e6 * cpu / max(1, relayed),
        }
    return result
