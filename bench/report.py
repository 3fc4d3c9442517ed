"""The markdown report of a `make bench` run: medians over rounds, added over direct, ratios."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GATEWAYS = ("gatehouse-sqlite", "gatehouse-pg")
Result = dict[str, Any]

# Translated client surfaces, one client at a time, beside the chat-completions passthrough (chat_seq); the
# performance target: at most SURFACE_TARGET_MS more than chat_seq at p50.
SURFACES = (
    ("chat_seq", "chat completions (passthrough)"),
    ("responses_seq", "Responses, `store: false`"),
    ("responses_store_seq", "Responses, stored (default `store`)"),
    ("messages_seq", "Anthropic Messages"),
)
SURFACE_TARGET_MS = 0.2


@dataclass(frozen=True)
class Metric:
    scenario: str
    get: Callable[[Result], float | None]
    label: str
    unit: str
    better: str  # "lower" or "higher"
    added: bool = False  # also show the difference with direct
    digits: int = 1
    direct_scenario: str | None = None  # direct's scenario to compare with, when direct does not serve this one


def _path(*keys: str) -> Callable[[Result], float | None]:
    def get(result: Result) -> float | None:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return get


METRICS = [
    Metric("chat_seq", _path("latency_ms", "p50"), "chat, one client at a time: p50", "ms", "lower", True, 2),
    Metric("chat_seq", _path("latency_ms", "p99"), "chat, one client at a time: p99", "ms", "lower", True, 2),
    *(
        Metric(
            scenario,
            _path("latency_ms", pct),
            f"{what}, one client at a time: {pct}",
            "ms",
            "lower",
            True,
            2,
            "chat_seq",
        )
        for scenario, what in (
            ("responses_seq", "Responses (store: false) → chat"),
            ("responses_store_seq", "Responses (stored) → chat"),
            ("messages_seq", "Messages → chat"),
        )
        for pct in ("p50", "p99")
    ),
    Metric("chat_open", _path("latency_ms", "p50"), "chat, 300 req/s open loop: p50", "ms", "lower", True, 2),
    Metric("chat_open", _path("latency_ms", "p99"), "chat, 300 req/s open loop: p99", "ms", "lower", True, 2),
    Metric("chat_sat", _path("rps"), "chat, saturation (64 connections): throughput", "req/s", "higher", False, 0),
    Metric("chat_sat", _path("latency_ms", "p50"), "chat, saturation: p50", "ms", "lower", True, 1),
    Metric("stream64", _path("ttft_ms", "p50"), "64-token stream, one at a time: TTFT p50", "ms", "lower", True, 2),
    Metric("stream64", _path("latency_ms", "p50"), "64-token stream, one at a time: total p50", "ms", "lower", True, 2),
    Metric("stream64", _path("latency_ms", "p99"), "64-token stream, one at a time: total p99", "ms", "lower", True, 2),
    Metric("embed_seq", _path("latency_ms", "p50"), "embeddings, one client at a time: p50", "ms", "lower", True, 2),
    Metric("embed_seq", _path("latency_ms", "p99"), "embeddings, one client at a time: p99", "ms", "lower", True, 2),
    Metric("embed_sat", _path("rps"), "embeddings, saturation: throughput", "req/s", "higher", False, 0),
    Metric("streams1000", _path("ttft_ms", "p50"), "1,000 slow streams: TTFT p50", "ms", "lower", True, 1),
    Metric("streams1000", _path("ttft_ms", "p99"), "1,000 slow streams: TTFT p99", "ms", "lower", True, 1),
    Metric("streams1000", _path("rss_per_stream_kb"), "1,000 slow streams: RSS growth per stream", "KB", "lower"),
    Metric("streams1000", _path("cpu_core_pct"), "1,000 slow streams: CPU", "% of one core", "lower"),
    Metric("streams1000", _path("cpu_us_per_token"), "1,000 slow streams: CPU per relayed token", "µs", "lower"),
    Metric("start", _path("seconds"), "start to ready", "s", "lower", False, 2),
    Metric("idle", _path("rss_mb"), "idle resident memory", "MB", "lower"),
]


def _values(data: Result, target: str, scenario: str, get: Callable[[Result], float | None]) -> list[float | None]:
    runs = data["results"].get(target, {}).get(scenario, [])
    return [None if r.get("failed") else get(r) for r in runs]


def median(data: Result, target: str, m: Metric) -> float | None:
    values = [v for v in _values(data, target, m.scenario, m.get) if v is not None]
    return statistics.median(values) if values else None


def added(data: Result, target: str, m: Metric) -> float | None:
    """Median over rounds of (target - direct) in the same round (direct's own scenario, or the one it serves)."""
    return _paired(data, target, m.scenario, "direct", m.direct_scenario or m.scenario, m.get)


def _paired(
    data: Result,
    target: str,
    scenario: str,
    other: str,
    other_scenario: str,
    get: Callable[[Result], float | None],
) -> float | None:
    """Median over rounds of (target's scenario - other's scenario) in the same round."""
    return statistics.median(diffs) if (diffs := _diffs(data, target, scenario, other, other_scenario, get)) else None


def _diffs(
    data: Result,
    target: str,
    scenario: str,
    other: str,
    other_scenario: str,
    get: Callable[[Result], float | None],
) -> list[float]:
    mine = _values(data, target, scenario, get)
    theirs = _values(data, other, other_scenario, get)
    return [a - b for a, b in zip(mine, theirs, strict=False) if a is not None and b is not None]


def errors(data: Result, target: str, scenario: str | None = None) -> int:
    total = 0
    for name, runs in data["results"].get(target, {}).items():
        if scenario is None or name == scenario:
            total += sum(int(r.get("errors", 0)) for r in runs)
    return total


def overloaded(data: Result, target: str) -> str:
    """A note when the target could not keep up with the open-loop rate in some round."""
    runs = [r for r in data["results"].get(target, {}).get("chat_open", []) if not r.get("failed")]
    short = [r for r in runs if r.get("achieved_rps", 0) < 0.95 * r.get("rate", 0) or r.get("late")]
    if not short:
        return ""
    served = statistics.median(r.get("served_rps", 0) for r in short)
    timeout = max(r.get("timeout_ms", 0) for r in short) / 1000
    return (
        f" (overloaded in {len(short)}/{len(runs)} rounds: served {served:,.0f} req/s; requests unanswered "
        f"within {timeout:g} s count as {timeout:g} s)"
    )


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a <= 0 or b <= 0:
        return "n/a"
    r = a / b
    if r >= 10:
        return f"{r:,.0f}x"
    if r >= 0.1:
        return f"{r:.2f}x"
    return f"{r:.3f}x" if r >= 0.001 else "<0.001x"


def brief(scenario: str, result: Result) -> str:
    """One log line for one measurement."""
    if result.get("failed"):
        return "FAILED: " + "; ".join(result.get("error_samples", []))
    parts = []
    for key in ("rps",):
        if key in result:
            parts.append(f"{result[key]:,.0f} req/s")
    for key in ("latency_ms", "ttft_ms"):
        if result.get(key):
            pct = result[key]
            parts.append(f"{key[:-3]} p50 {pct.get('p50', 0):.2f} p99 {pct.get('p99', 0):.2f} ms")
    for key, unit in (("rss_per_stream_kb", "KB/stream"), ("cpu_core_pct", "% core"), ("open_min", "open")):
        if key in result:
            parts.append(f"{result[key]:,.1f} {unit}")
    parts.append(f"errors {result.get('errors', 0)}")
    if result.get("error_samples"):
        parts.append(str(result["error_samples"][:2]))
    return ", ".join(parts)


def _labels(data: Result) -> dict[str, str]:
    """The targets measured, in the run's order, with their labels."""
    meta = data["meta"]
    labels = {t: meta["targets"][t]["label"] for t in meta["targets"] if t in data["results"]}
    if "litellm" in labels:
        labels["litellm"] = f"LiteLLM ({meta['targets']['litellm']['note']})"
    return labels


def _header(data: Result, title: str, intro: str) -> list[str]:
    """The title, then when, where and with what the run was made."""
    meta = data["meta"]
    m, v, prof = meta["machine"], meta["versions"], meta["profile"]
    out: list[str] = []
    w = out.append
    w(f"# {title}\n")
    w(intro + "\n")
    w(f"- **Date**: {meta['date']}; {prof['rounds']} round(s), run took {meta['wall_s'] / 60:.1f} min")
    w(
        f"- **Machine**: {m['nproc']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, Linux {m['kernel']}; "
        f"load average {m['loadavg'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end"
    )
    w(
        f"- **Versions**: Python {v['python']}, Gatehouse {v['gatehouse']}, LiteLLM {v['litellm']}, "
        f"{v['wrk']}, PostgreSQL {v['postgresql']}, Redis {v['redis']}, uvicorn {v['uvicorn']}, uvloop {v['uvloop']}"
    )
    w(f"- **Command**: `{meta['command']}`")
    code = meta.get("code_per_round") or []
    if len(set(code)) > 1:
        w(
            f"- **Note**: Gatehouse's source changed during the run (per round: {', '.join(code)}); each round "
            "restarts it from the working tree, so rounds measured different code."
        )
    if "litellm" in data["results"]:
        w(f"- **LiteLLM mode**: {meta['targets']['litellm']['note']}")
    w(
        "- Every gateway runs one worker process in front of the same fake upstream; the load generators and all "
        "servers share the machine's cores. Medians over rounds; *added* = target minus direct in the same round "
        "(median over rounds)."
    )
    w("")
    return out


def has_surfaces(data: Result) -> bool:
    """Whether the run measured a translated surface (Responses or Messages) on some target."""
    return any(s in runs for runs in data["results"].values() for s, _ in SURFACES[1:])


def surfaces_section(data: Result) -> list[str]:
    """Translated surfaces beside the chat-completions passthrough, per Gatehouse target: p50 and p99 (medians over
    rounds), added over direct's chat, and the difference to the same target's chat in the same round."""
    labels = _labels(data)
    prof = data["meta"]["profile"]
    p50, p99 = _path("latency_ms", "p50"), _path("latency_ms", "p99")
    gateways = [t for t in labels if t in GATEWAYS and any(s in data["results"][t] for s, _ in SURFACES[1:])]
    out: list[str] = []
    w = out.append
    w("## Translated surfaces\n")
    w(
        f"One client at a time (`wrk -t1 -c1`, {prof['seq_s']:g} s after 1 s of warm-up), non-streamed, the same "
        "system prompt, user prompt and completion cap in each surface's own shape, in front of the fake upstream, "
        "which is OpenAI-compatible: a chat-completions request passes through, a Responses or Messages request is "
        "translated to chat completions and its answer translated back. Every answer's status is checked, and before "
        "each run one answer per surface is parsed in full (shape, text, usage; Messages also with the key as a "
        "bearer token; a stored Response read back, a `store: false` one not found).\n"
    )
    w(
        f"**Target**: a translated surface costs at most {SURFACE_TARGET_MS:g} ms more than the chat-completions "
        "passthrough at p50. *Δ vs chat* = the surface minus chat on the same target in the same round (median over "
        "rounds; *within* = rounds where it was within the target); *added* = the surface minus direct's chat in the "
        "same round.\n"
    )
    if not gateways:
        w("No Gatehouse target measured them in this run.\n")
        return out
    w(
        "| target | surface | p50 (ms) | p99 (ms) | added p50 (ms) | Δ p50 vs chat (ms) | Δ p99 vs chat (ms) "
        f"| ≤ {SURFACE_TARGET_MS:g} ms at p50 |"
    )
    w("|---|---|---:|---:|---:|---:|---:|---|")
    for t in gateways:
        for scenario, what in SURFACES:
            if scenario not in data["results"][t]:
                continue
            m50 = Metric(scenario, p50, "", "ms", "lower")
            m99 = Metric(scenario, p99, "", "ms", "lower")
            add = _paired(data, t, scenario, "direct", "chat_seq", p50)
            cells = [labels[t], what, fmt(median(data, t, m50), 2), fmt(median(data, t, m99), 2), fmt(add, 2)]
            if scenario == "chat_seq":
                cells += ["", "", ""]
            else:
                d50 = _diffs(data, t, scenario, t, "chat_seq", p50)
                delta = statistics.median(d50) if d50 else None
                cells += [_signed(delta), _signed(_paired(data, t, scenario, t, "chat_seq", p99))]
                if delta is None:
                    cells.append("n/a")
                else:
                    within = sum(d <= SURFACE_TARGET_MS for d in d50)
                    verdict = "**met**" if delta <= SURFACE_TARGET_MS else "**missed**"
                    cells.append(f"{verdict} ({within}/{len(d50)} rounds within)")
            bad = errors(data, t, scenario)
            if bad:
                cells[1] += f" ({bad:,} errors)"
            w("| " + " | ".join(cells) + " |")
    w("")
    return out


def _signed(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:+,.{digits}f}"


def render_surfaces(data: Result) -> str:
    """A page of the translated surfaces alone (docs/benchmarks-surfaces.md), for a run of those scenarios."""
    labels = _labels(data)
    out = _header(
        data,
        "Benchmarks: translated client surfaces",
        "Written by `python -m bench` (`bench/run.py`; how it works: [bench/README.md](../bench/README.md)) when a "
        "run measures the Responses and Messages scenarios; the latest such run replaces this file. The other "
        "scenarios' latest results: [benchmarks.md](benchmarks.md).",
    )
    out += surfaces_section(data)
    out += _checks(data, list(labels), [s for s, _ in SURFACES])
    return "\n".join(out)


def render(data: Result) -> str:
    labels = _labels(data)
    targets = list(labels)
    gateways = [t for t in targets if t != "direct"]
    gh = [t for t in gateways if t in GATEWAYS]
    has_litellm = "litellm" in targets
    prof = data["meta"]["profile"]
    by = {(x.scenario, x.label): x for x in METRICS}
    out = _header(
        data,
        "Benchmarks",
        "Written by `make bench` (`bench/run.py`; how it works: [bench/README.md](../bench/README.md)). "
        "The latest run replaces this file; raw results are kept in `bench/results/`.",
    )
    w = out.append

    # Headline table.
    if gateways:
        w("## Targets\n")
        head = ["metric", *(labels[t] for t in gateways)]
        if has_litellm:
            head += [f"{labels[t]} ÷ LiteLLM" for t in gh]
        w("| " + " | ".join(head) + " |")
        w("|---|" + "---:|" * (len(head) - 1))
        rows: list[tuple[str, Metric, str]] = [
            (
                "added latency, non-streamed chat, one client: p50 (ms)",
                by["chat_seq", "chat, one client at a time: p50"],
                "added",
            ),
            (
                "added latency, non-streamed chat, one client: p99 (ms)",
                by["chat_seq", "chat, one client at a time: p99"],
                "added",
            ),
            ("added p99 at 300 req/s open loop (ms)", by["chat_open", "chat, 300 req/s open loop: p99"], "added"),
            (
                "throughput at saturation, one worker (req/s)",
                by["chat_sat", "chat, saturation (64 connections): throughput"],
                "value",
            ),
            (
                "1,000 streams: RSS growth per stream (KB)",
                by["streams1000", "1,000 slow streams: RSS growth per stream"],
                "value",
            ),
            (
                "1,000 streams: TTFT overhead p50 (ms over direct)",
                by["streams1000", "1,000 slow streams: TTFT p50"],
                "added",
            ),
            (
                "1,000 streams: CPU (% of one core)",
                by["streams1000", "1,000 slow streams: CPU"],
                "value",
            ),
            ("start to ready (s)", by["start", "start to ready"], "value"),
            ("idle resident memory (MB)", by["idle", "idle resident memory"], "value"),
        ]
        direct_rps = median(data, "direct", by["chat_sat", "chat, saturation (64 connections): throughput"])
        for title, metric, how in rows:
            vals = {t: (added(data, t, metric) if how == "added" else median(data, t, metric)) for t in gateways}
            cells = []
            for t in gateways:
                cell = fmt(vals[t], metric.digits)
                if metric.scenario == "chat_sat" and vals[t] and direct_rps:
                    cell += f" ({ratio(vals[t], direct_rps)} direct)"
                if metric.scenario == "chat_open":
                    cell += overloaded(data, t)
                cells.append(cell)
            if has_litellm:
                cells += [ratio(vals[t], vals.get("litellm")) for t in gh]
            w(f"| {title} | " + " | ".join(cells) + " |")
        w(
            "| errors (all scenarios, all rounds) | "
            + " | ".join(str(errors(data, t)) for t in gateways)
            + (" | " + " | ".join("" for _ in gh) if has_litellm else "")
            + " |"
        )
        w("")
        if has_litellm:
            w(
                "Ratios are Gatehouse ÷ LiteLLM of the values in the row: below 1 is better for latency, memory "
                "and time, above 1 for throughput.\n"
            )

    if has_surfaces(data):
        out += surfaces_section(data)

    # Full table.
    w("## All measurements\n")
    head = ["metric", "better", *(labels[t] for t in targets)]
    if has_litellm:
        head += [f"{labels[t]} ÷ LiteLLM" for t in gh]
    w("| " + " | ".join(head) + " |")
    w("|---|---|" + "---:|" * (len(head) - 2))
    for metric in METRICS:
        vals = {t: median(data, t, metric) for t in targets}
        if all(x is None for x in vals.values()):
            continue
        cells = []
        for t in targets:
            cell = fmt(vals[t], metric.digits)
            if metric.added and t != "direct" and vals[t] is not None:
                diff = added(data, t, metric)
                if diff is not None:
                    cell += f" ({diff:+,.{metric.digits}f})"
            cells.append(cell)
        if has_litellm:
            cells += [ratio(vals[t], vals.get("litellm")) for t in gh]
        w(f"| {metric.label} ({metric.unit}) | {metric.better} | " + " | ".join(cells) + " |")
    scenarios = sorted({s for t in targets for s in data["results"][t]}, key=_scenario_order)
    for scenario in scenarios:
        w(
            f"| errors: {scenario} | lower | "
            + " | ".join(str(errors(data, t, scenario)) if scenario in data["results"][t] else "n/a" for t in targets)
            + (" | " + " | ".join("" for _ in gh) if has_litellm else "")
            + " |"
        )
    w("")
    w("Latencies in a cell: the target's median, then (in brackets) what it adds over direct.\n")

    out += _checks(data, targets)
    w("## How it was measured\n")
    w(
        f"- Fake upstream (`bench/fakeup.py`): `bench-fast` answers at once ({prof['fast_tokens']} tokens, back to "
        f"back when streamed); `bench-slow` sends its first token after {prof['slow_first_ms']:g} ms, then one every "
        f"{prof['token_ms']:g} ms, {prof['slow_tokens']} in all; `bench-embed` returns a 32-float vector."
    )
    w(
        f"- One client at a time: `wrk -t1 -c1` for {prof['seq_s']:g} s (chat) / {prof['embed_s']:g} s (embeddings). "
        f"Saturation: `wrk -t1 -c{prof['sat_conns']}` for {prof['sat_s']:g} s (chat) / {prof['embed_s']:g} s "
        "(embeddings), after a warm-up run."
    )
    w(
        f"- Open loop: {prof['open_rate']:g} requests/s for {prof['open_s']:g} s (after {prof['open_warm_s']:g} s "
        "of warm-up) from `bench/loadgen.py`; request i is due at t0 + i/rate and its latency counts from that time, "
        "over a pool of keep-alive connections that grows when none is idle."
    )
    w(
        f"- Streams: 64-token streams one after another for {prof['stream_s']:g} s; TTFT = first non-empty "
        f"content token. {prof['streams']:,} slow streams: opened over {prof['ramp_s']:g} s, one connection each; "
        "RSS (VmRSS summed over the target's process tree) and CPU (utime + stime) sampled while all are open, "
        "against the idle RSS just before; per stream = growth ÷ open streams."
    )
    w(
        f"- Start to ready: spawn to the first 200 from `/readyz` (Gatehouse, already migrated database), "
        f"`/health/readiness` (LiteLLM) or `/health` (fake upstream), polled every 5 ms. Idle memory: after "
        f"{prof['warmup_requests']} chat requests and {prof['idle_s']:g} s idle."
    )
    w(
        "- Gatehouse: `gatehouse serve --workers 1`, ENVIRONMENT=prod, INFO JSON logs to a file, a regular user's "
        "API key (key auth, per-minute rate limit, daily message and token quotas reserved and settled, request "
        "log, metrics all on; limits set high so they never bind). LiteLLM: `litellm --num_workers 1`, default "
        "logging, the bench models mapped to `openai/<name>` at the fake upstream, `LITELLM_LOCAL_MODEL_COST_MAP=True` "
        "(offline). Both gateways may open 4,096 upstream connections (Gatehouse `max_connections`, LiteLLM "
        "`AIOHTTP_CONNECTOR_LIMIT` and `_PER_HOST`). Bare relay (`bench/floor.py`): a pure ASGI app under uvicorn "
        "(uvloop, httptools) that forwards each request with one aiohttp session and relays the answer chunk by "
        "chunk, with no authentication, quotas, logs or metrics: what the server and client libraries cost before "
        "any feature."
    )
    w("")
    return "\n".join(out)


def _checks(data: Result, targets: list[str], scenarios: list[str] | None = None) -> list[str]:
    """Errors per target (of these scenarios only, when given), with samples of what went wrong."""
    labels = _labels(data)
    out: list[str] = []
    w = out.append
    w("## Checks\n")
    for t in targets:
        runs_of = {k: v for k, v in data["results"][t].items() if scenarios is None or k in scenarios}
        if not runs_of:
            continue
        n = sum(errors(data, t, k) for k in runs_of)
        checked = sum(int(r.get("requests", r.get("streams", 0))) for runs in runs_of.values() for r in runs)
        late = sum(int(r.get("late", 0)) for r in runs_of.get("chat_open", []))
        note = (
            f" The open loop also left {late:,} requests unanswered within their time limit (overloaded, not "
            "counted as errors)."
            if late
            else ""
        )
        if n == 0:
            w(f"- {labels[t]}: **passed**: {checked:,} responses, 0 errors.{note}")
        else:
            detail = []
            for scenario, runs in runs_of.items():
                bad = sum(int(r.get("errors", 0)) for r in runs)
                if bad:
                    samples = sorted({s for r in runs for s in r.get("error_samples", [])} | _wrk_detail(runs))
                    detail.append(f"{scenario}: {bad} ({'; '.join(samples[:3])})")
            w(f"- {labels[t]}: **FAILED**: {n:,} errors in {checked:,} responses; " + "; ".join(detail) + "." + note)
    w(
        "\nChecked: every response's status (wrk: non-2xx and socket errors; the Python load generator: 200), "
        "one fully parsed answer before each wrk run, and for every stream the final `data: [DONE]` and the "
        "number of content tokens.\n"
    )
    return out


def _scenario_order(name: str) -> int:
    order = [
        "start",
        "idle",
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
    ]
    return order.index(name) if name in order else len(order)


def _wrk_detail(runs: list[Result]) -> set[str]:
    found: set[str] = set()
    for r in runs:
        for kind, count in (r.get("error_detail") or {}).items():
            found.add(f"wrk {kind} errors: {count}")
    return found
