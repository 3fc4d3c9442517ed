"""The Soak section of docs/reliability.md, in markdown, from a finished run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.soak.report import files_trend, rss_trend, sparkline

if TYPE_CHECKING:
    from bench.soak.run import Outcome


def render(outcome: Outcome, failed: list[str], *, chart_name: str) -> str:
    """The section: verdict, traffic, errors, operators' actions, resources, usage against the ledger, audit chain."""
    tally = outcome.world.tally
    total = sum(tally.requests.values())
    short = outcome.minutes < 30
    lines = [
        "## Soak",
        "",
        f"`make soak` (`SOAK_MINUTES={outcome.minutes:g}`) on {outcome.started_at:%Y-%m-%d %H:%M} UTC, "
        f"{outcome.machine}: "
        f"{outcome.minutes:g} minutes of traffic ({outcome.elapsed / 60:.1f} with the checks)"
        + (" — **a short run**, not the 30-minute soak the issue asks for." if short else "."),
        "The topology is `scripts/local-ha.sh` (HAProxy, three replicas, PostgreSQL, Redis) in front of the fake "
        "upstream (`tests/support/fake_upstream`) under two upstream names, `soak-a` and `soak-b`. "
        "The machine is shared with other work, so resource figures are noisy.",
        "",
        f"**Verdict: {'FAILED' if failed else 'passed'}.**" + ("" if not failed else " " + "; ".join(failed) + "."),
        "",
        "### Traffic",
        "",
        f"{total:,} requests from {len(outcome.world.people)} clients (one user each), through the proxy:",
        "",
        "| surface | requests |",
        "| --- | ---: |",
        *(f"| {surface} | {count:,} |" for surface, count in sorted(tally.requests.items())),
        "",
        "### Errors",
        "",
        f"{sum(k.count for k in tally.errors.values()):,} errors, **{tally.unexplained} unexplained**.",
        "",
        "| status | code | errors | explained | by |",
        "| ---: | --- | ---: | ---: | --- |",
        *(
            f"| {k.status} | `{k.code}` | {k.count:,} | {k.explained:,} | {', '.join(sorted(k.why)) or '-'} |"
            for k in sorted(tally.errors.values(), key=lambda k: (k.status, k.code))
        ),
    ]
    if not tally.errors:
        lines.append("| | none | | | |")
    if tally.unexplained_examples:
        lines += ["", "Unexplained (first ones):", "", *(f"- `{e}`" for e in tally.unexplained_examples)]
    lines += [
        "",
        "### Operators' actions",
        "",
        "Through the admin API while the traffic ran: a user blocked for 10 s then unblocked (about every 40 s), "
        "`soak-a` forced down, drained, up, then its override lifted (about every 60 s), a live long stream "
        "terminated (about every 12 s), a key revoked and a new one issued 5 s later (about every 50 s), a backup and "
        "its verification (at a third), the retention purge (at two thirds).",
        "",
        "| action | times |",
        "| --- | ---: |",
        *(f"| {action} | {count} |" for action, count in sorted(outcome.operators.counts.items())),
    ]
    if outcome.operators.failures:
        lines += ["", "Failed actions:", "", *(f"- {f}" for f in outcome.operators.failures)]
    lines += [
        "",
        "### Memory and open files per replica",
        "",
        f"Sampled from `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/fd` of each replica's process tree; the first "
        f"{outcome.warmup:.0f} s are warm-up. Growth compares the median of the first and of the last tenth of the "
        "samples after warm-up; criteria: RSS growth under 10%, open files within max(5, 10%) of their level. "
        f"Chart: [{chart_name}]({chart_name}).",
        "",
        "| replica | RSS after warm-up | RSS at the end | growth | RSS over time | open files after warm-up "
        "| at the end | open files over time |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for name, samples in sorted(outcome.samples.items()):
        rss, files = rss_trend(samples, outcome.warmup), files_trend(samples, outcome.warmup)
        if rss is None or files is None:
            lines.append(f"| {name} | too few samples | | | | | | |")
            continue
        lines.append(
            f"| {name} | {rss.start / 1024:.1f} MiB | {rss.end / 1024:.1f} MiB | {rss.growth:+.1%}"
            f"{'' if rss.ok else ' (over)'} | `{sparkline([s.rss_kb for s in samples])}` | {files.start:.0f} | "
            f"{files.end:.0f}{'' if files.ok else ' (grew)'} | `{sparkline([s.open_files for s in samples])}` |"
        )
    lines += ["", "### Usage against the upstream's ledger", ""]
    ledger = outcome.ledger
    if ledger is None:
        lines.append("Not compared (the run stopped before).")
    else:
        lines += [
            "Gatehouse's request log (PostgreSQL; the usage report API's per-model totals agree with it"
            + (")" if not any("usage report" in p for p in outcome.problems) else ": **they do not**)")
            + " against the fake upstream's ledger (`GET /_ledger`: what it generated, per model). Answers that "
            "finished must match exactly; streams an operator terminated must be as many, with no more completion "
            "tokens recorded than the upstream produced (their prompt is Gatehouse's estimate).",
            "",
            "| model | answers | Gatehouse: requests, prompt, completion | upstream ledger | equal |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, rows in (("finished", ledger.finished), ("terminated", ledger.cut_short)):
            for model, (ours, theirs) in sorted(rows.items()):
                same = ours == theirs if label == "finished" else ours.requests == theirs.requests
                lines.append(
                    f"| {model} | {label} | {ours.requests:,}, {ours.prompt_tokens:,}, {ours.completion_tokens:,} | "
                    f"{theirs.requests:,}, {theirs.prompt_tokens:,}, {theirs.completion_tokens:,} | "
                    f"{'yes' if same else '**no**'} |"
                )
        if ledger.problems:
            lines += ["", *(f"- {p}" for p in ledger.problems)]
        if outcome.other_rows:
            lines += ["", "Other requests that reached an upstream:", "", *(f"- {r}" for r in outcome.other_rows)]
    audit = outcome.audit
    lines += [
        "",
        "### Audit chain",
        "",
        f"`GET /admin/audit/verify` at the end: ok {audit.get('ok')}, {audit.get('checked', '?')} events checked"
        + (f", broken at row {audit.get('broken_row')} ({audit.get('reason')})" if audit.get("broken_row") else "")
        + f"; `gatehouse audit verify`: {outcome.audit_cli.splitlines()[0] if outcome.audit_cli else '-'}.",
    ]
    other = [p for p in outcome.problems if "usage report" not in p]
    if other:
        lines += ["", "Other problems:", "", *(f"- {p}" for p in other)]
    return "\n".join(lines) + "\n"
