"""The soak's figures and verdict: pure computations over what the run collected, the markdown section, the chart.

Nothing here touches a process or the network, so tests/unit/bench/test_soak_report.py checks the arithmetic.
"""

from __future__ import annotations

import html
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RSS_GROWTH_LIMIT = 0.10  # growth of a replica's RSS after warm-up, as a fraction of its level just after it
FILES_TOLERANCE = 5  # open files may end this many above their level after warm-up (connections come and go)
FILES_TOLERANCE_FRACTION = 0.10  # ... or this fraction of it, whichever is larger
WINDOW_FRACTION = 0.10  # the level at a point: the median of the samples over this fraction of the measured span
BEGIN = "<!-- soak:begin: written by `make soak` (bench/soak); edits between these markers are overwritten -->"
END = "<!-- soak:end -->"
SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Sample:
    """One replica's resources at one moment (seconds since the soak's start)."""

    at: float
    rss_kb: int
    open_files: int


@dataclass(frozen=True)
class Trend:
    """A series' level just after warm-up and at the end (medians over a window each), and the verdict."""

    start: float
    end: float
    ok: bool

    @property
    def growth(self) -> float:
        """(end - start) / start; 0 when there is nothing to compare."""
        return (self.end - self.start) / self.start if self.start else 0.0


def _levels(values: Sequence[tuple[float, float]], warmup: float) -> tuple[float, float] | None:
    """Median level of the first and of the last window after warm-up, or None with too few samples."""
    measured = [(at, value) for at, value in values if at >= warmup]
    if len(measured) < 2:
        return None
    span = measured[-1][0] - measured[0][0]
    window = max(span * WINDOW_FRACTION, 1e-9)
    first = [v for at, v in measured if at <= measured[0][0] + window]
    last = [v for at, v in measured if at >= measured[-1][0] - window]
    return float(statistics.median(first)), float(statistics.median(last))


def rss_trend(samples: Sequence[Sample], warmup: float, limit: float = RSS_GROWTH_LIMIT) -> Trend | None:
    """RSS after warm-up: ok when it grew by less than `limit` (a fraction) from the first window to the last."""
    levels = _levels([(s.at, s.rss_kb) for s in samples], warmup)
    if levels is None:
        return None
    start, end = levels
    return Trend(start, end, ok=end < start * (1 + limit))


def files_trend(samples: Sequence[Sample], warmup: float) -> Trend | None:
    """Open files after warm-up: flat when the last window's level is within the tolerance of the first's."""
    levels = _levels([(s.at, s.open_files) for s in samples], warmup)
    if levels is None:
        return None
    start, end = levels
    allowed = max(FILES_TOLERANCE, start * FILES_TOLERANCE_FRACTION)
    return Trend(start, end, ok=end - start <= allowed)


@dataclass(frozen=True)
class UsageRow:
    """Requests and tokens per model, as one side counted them."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class LedgerCheck:
    """Gatehouse's records against the fake upstream's ledger, per model."""

    finished: dict[str, tuple[UsageRow, UsageRow]]  # model -> (gatehouse, ledger), answers that finished
    cut_short: dict[str, tuple[UsageRow, UsageRow]]  # model -> (gatehouse, ledger), terminated streams
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every finished answer recorded as the upstream reported it; every terminated one recorded once."""
        return not self.problems


def compare_usage(
    gatehouse_finished: Mapping[str, UsageRow],
    gatehouse_cut: Mapping[str, UsageRow],
    ledger: Mapping[str, Mapping[str, int]],
) -> LedgerCheck:
    """Equal when, per model, the answers that finished have the same count, prompt and completion tokens on both
    sides, and the streams cut short (operators' terminations) are as many on both sides with no more completion
    tokens recorded than the upstream produced (Gatehouse counts what it relayed; the upstream may have produced
    a token or two more before it noticed). The prompt of a cut stream is Gatehouse's estimate: shown, not compared.
    """
    finished: dict[str, tuple[UsageRow, UsageRow]] = {}
    cut: dict[str, tuple[UsageRow, UsageRow]] = {}
    problems: list[str] = []
    for model in sorted(set(gatehouse_finished) | set(gatehouse_cut) | set(ledger)):
        entry = ledger.get(model, {})
        theirs = UsageRow(
            entry.get("finished", 0), entry.get("finished_prompt_tokens", 0), entry.get("finished_completion_tokens", 0)
        )
        ours = gatehouse_finished.get(model, UsageRow())
        finished[model] = (ours, theirs)
        if ours != theirs:
            problems.append(
                f"{model}: finished answers recorded {ours.requests} requests, {ours.prompt_tokens} prompt and "
                f"{ours.completion_tokens} completion tokens; the upstream counted {theirs.requests}, "
                f"{theirs.prompt_tokens} and {theirs.completion_tokens}"
            )
        theirs_cut = UsageRow(
            entry.get("cut_short", 0),
            entry.get("cut_short_prompt_tokens", 0),
            entry.get("cut_short_completion_tokens", 0),
        )
        ours_cut = gatehouse_cut.get(model, UsageRow())
        if ours_cut.requests or theirs_cut.requests:
            cut[model] = (ours_cut, theirs_cut)
        if ours_cut.requests != theirs_cut.requests:
            problems.append(
                f"{model}: {ours_cut.requests} terminated requests recorded, the upstream saw {theirs_cut.requests} "
                "answers cut short"
            )
        elif ours_cut.completion_tokens > theirs_cut.completion_tokens:
            problems.append(
                f"{model}: {ours_cut.completion_tokens} completion tokens recorded for terminated streams, more than "
                f"the {theirs_cut.completion_tokens} the upstream produced"
            )
    return LedgerCheck(finished, cut, problems)


@dataclass
class ErrorKind:
    """Errors of one status and code: how many, and how many an operator's action explains."""

    status: int
    code: str
    count: int = 0
    explained: int = 0
    why: set[str] = field(default_factory=set)


@dataclass
class Tally:
    """Requests by surface, and errors by kind with their explanation."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[tuple[int, str], ErrorKind] = field(default_factory=dict)
    unexplained_examples: list[str] = field(default_factory=list)

    def request(self, surface: str) -> None:
        """Count one request on `surface`."""
        self.requests[surface] = self.requests.get(surface, 0) + 1

    def error(self, status: int, code: str, *, because: str | None, detail: str = "") -> None:
        """Count one error; `because` names the operator's action that explains it (None: unexplained)."""
        kind = self.errors.setdefault((status, code), ErrorKind(status, code))
        kind.count += 1
        if because is not None:
            kind.explained += 1
            kind.why.add(because)
        elif len(self.unexplained_examples) < 20:
            self.unexplained_examples.append(f"{status} {code}: {detail}"[:300])

    @property
    def unexplained(self) -> int:
        """Errors no operator's action explains."""
        return sum(kind.count - kind.explained for kind in self.errors.values())


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """A compact text chart of `values` (resampled to at most `width` points)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[int((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def svg_chart(series: Mapping[str, Sequence[Sample]], *, title: str, warmup: float) -> str:
    """Two panels (RSS in MiB, open files) with one line per replica over time; the warm-up shaded."""
    width, height, pad = 720, 180, 40
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    end = max((s[-1].at for s in series.values() if s), default=1.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * height + 30}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{pad}" y="14">{html.escape(title)}</text>',
    ]
    panels: list[tuple[str, Any]] = [("RSS (MiB)", lambda s: s.rss_kb / 1024), ("open files", lambda s: s.open_files)]
    for index, (label, value) in enumerate(panels):
        top = 24 + index * (height + 6)
        values = [value(s) for samples in series.values() for s in samples]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        low, high = low * 0.95, (high * 1.05) or 1.0
        plot_w, plot_h = width - 2 * pad, height - 30

        def x(at: float, plot_w: int = plot_w) -> float:
            return pad + at / end * plot_w

        def y(v: float, top: int = top, low: float = low, high: float = high, plot_h: int = plot_h) -> float:
            return top + plot_h - (v - low) / ((high - low) or 1.0) * plot_h

        parts.append(f'<rect x="{pad}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
        parts.append(
            f'<rect x="{pad}" y="{top}" width="{x(min(warmup, end)) - pad:.1f}" height="{plot_h}" fill="#eee"/>'
        )
        parts.append(f'<text x="{pad + 4}" y="{top + 12}">{label}; shaded: warm-up</text>')
        parts.append(f'<text x="2" y="{top + 10}">{high:.0f}</text><text x="2" y="{top + plot_h}">{low:.0f}</text>')
        for color, (name, samples) in zip(colors, series.items(), strict=False):
            points = " ".join(f"{x(s.at):.1f},{y(value(s)):.1f}" for s in samples)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
            if index == 0:
                legend_x = width - pad - 70 * (len(series) - list(series).index(name))
                parts.append(f'<text x="{legend_x}" y="14" fill="{color}">{html.escape(name)}</text>')
        parts.append(f'<text x="{width - pad - 40}" y="{top + plot_h + 14}">{end / 60:.1f} min</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def replace_section(document: str, section: str) -> str:
    """`document` with the text between the soak markers replaced by `section` (appended when it has none)."""
    block = f"{BEGIN}\n{section.strip()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    return document.rstrip() + "\n\n" + block + "\n"


def write_section(path: Path, section: str) -> None:
    """Rewrite only the soak's section of `path` (docs/reliability.md)."""
    current = path.read_text() if path.exists() else "# Reliability\n"
    path.write_text(replace_section(current, section))
