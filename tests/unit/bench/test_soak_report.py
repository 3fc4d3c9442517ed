"""The soak's arithmetic (bench/soak/report.py): RSS growth and open files after warm-up, usage against the ledger,
errors explained or not, and the rewrite of only the Soak section of docs/reliability.md."""

from __future__ import annotations

import pytest
from bench.soak.report import (
    BEGIN,
    END,
    Sample,
    Tally,
    UsageRow,
    compare_usage,
    files_trend,
    replace_section,
    rss_trend,
    sparkline,
    svg_chart,
)


def _series(rss: list[int], files: list[int] | None = None, step: float = 10.0) -> list[Sample]:
    files = files or [50] * len(rss)
    return [Sample(at=i * step, rss_kb=r, open_files=f) for i, (r, f) in enumerate(zip(rss, files, strict=True))]


def test_rss_growth_is_judged_after_warm_up_between_the_first_and_last_windows() -> None:
    # Warm-up (the first 3 samples, up to 20 s) climbs from 100 to 200 MB; afterwards 200 -> 215: 7.5%.
    samples = _series([100_000, 150_000, 200_000] + [200_000] * 10 + [215_000] * 10)
    trend = rss_trend(samples, warmup=25)
    assert trend is not None
    assert (trend.start, trend.end) == (200_000, 215_000)
    assert trend.growth == pytest.approx(0.075)
    assert trend.ok
    grown = rss_trend(_series([200_000] * 10 + [221_000] * 10), warmup=0)
    assert grown is not None and grown.growth == pytest.approx(0.105) and not grown.ok


def test_one_outlier_does_not_decide_the_level() -> None:
    samples = _series([200_000] * 20 + [400_000] + [200_000] * 20)
    trend = rss_trend(samples, warmup=0)
    assert trend is not None and trend.ok and trend.growth == 0


def test_too_few_samples_after_warm_up_give_no_verdict() -> None:
    assert rss_trend(_series([1, 2, 3]), warmup=25) is None
    assert files_trend(_series([1, 2, 3]), warmup=25) is None


def test_open_files_are_flat_within_the_tolerance() -> None:
    flat = files_trend(_series([1] * 20, [40] * 10 + [45] * 10), warmup=0)
    assert flat is not None and flat.ok  # +5: within max(5, 10% of 40)
    leaking = files_trend(_series([1] * 20, [40] * 10 + [46] * 10), warmup=0)
    assert leaking is not None and not leaking.ok
    many = files_trend(_series([1] * 20, [200] * 10 + [219] * 10), warmup=0)
    assert many is not None and many.ok  # +19: within 10% of 200


LEDGER_ENTRY = {
    "answers": 12,
    "prompt_tokens": 300,
    "completion_tokens": 190,
    "finished": 10,
    "finished_prompt_tokens": 250,
    "finished_completion_tokens": 80,
    "cut_short": 2,
    "cut_short_prompt_tokens": 50,
    "cut_short_completion_tokens": 110,
}


def test_usage_equal_to_the_ledger() -> None:
    check = compare_usage({"m": UsageRow(10, 250, 80)}, {"m": UsageRow(2, 40, 108)}, {"m": LEDGER_ENTRY})
    assert check.ok, check.problems
    assert check.finished["m"] == (UsageRow(10, 250, 80), UsageRow(10, 250, 80))
    assert check.cut_short["m"] == (UsageRow(2, 40, 108), UsageRow(2, 50, 110))


@pytest.mark.parametrize(
    ("finished", "cut", "problem"),
    [
        (UsageRow(9, 225, 72), UsageRow(2, 40, 108), "finished answers recorded 9 requests"),
        (UsageRow(10, 250, 79), UsageRow(2, 40, 108), "79 completion tokens"),
        (UsageRow(10, 251, 80), UsageRow(2, 40, 108), "251 prompt"),
        (UsageRow(10, 250, 80), UsageRow(1, 20, 50), "1 terminated requests recorded, the upstream saw 2"),
        (UsageRow(10, 250, 80), UsageRow(2, 40, 111), "111 completion tokens recorded for terminated streams"),
    ],
)
def test_usage_that_differs_from_the_ledger_is_named(finished: UsageRow, cut: UsageRow, problem: str) -> None:
    check = compare_usage({"m": finished}, {"m": cut}, {"m": LEDGER_ENTRY})
    assert not check.ok
    assert any(problem in p for p in check.problems), check.problems


def test_a_model_on_one_side_only_differs() -> None:
    assert not compare_usage({"m": UsageRow(1, 5, 5)}, {}, {}).ok
    assert not compare_usage({}, {}, {"m": LEDGER_ENTRY}).ok
    assert compare_usage({}, {}, {}).ok


def test_errors_are_counted_by_kind_and_only_unexplained_ones_fail() -> None:
    tally = Tally()
    tally.request("chat")
    tally.request("chat")
    tally.error(403, "account_blocked", because="a user blocked by the soak's operator")
    tally.error(403, "account_blocked", because=None, detail="blocked with no block")
    tally.error(502, "upstream_failed", because=None, detail="boom")
    assert tally.requests == {"chat": 2}
    blocked = tally.errors[(403, "account_blocked")]
    assert (blocked.count, blocked.explained) == (2, 1)
    assert tally.unexplained == 2
    assert tally.unexplained_examples == ["403 account_blocked: blocked with no block", "502 upstream_failed: boom"]


def test_only_the_soak_section_is_rewritten() -> None:
    lead = "# Reliability\n\n## Fault matrix\n\nthe lead's text\n\n"
    document = f"{lead}{BEGIN}\nold figures\n{END}\n\n## After\n\nkept\n"
    updated = replace_section(document, "## Soak\n\nnew figures\n")
    assert "old figures" not in updated
    assert f"{BEGIN}\n## Soak\n\nnew figures\n{END}" in updated
    assert updated.startswith(lead)
    assert updated.endswith("## After\n\nkept\n")
    assert replace_section(updated, "## Soak\n\nnew figures\n") == updated
    appended = replace_section("# Reliability\n", "## Soak\n")
    assert appended == f"# Reliability\n\n{BEGIN}\n## Soak\n{END}\n"


def test_sparkline_and_chart() -> None:
    assert sparkline([1, 1, 1]) == "▁▁▁"
    assert sparkline([0, 7]) == "▁█"
    assert len(sparkline(list(range(100)), width=40)) == 40
    svg = svg_chart({"replica 1": _series([100_000, 110_000], [40, 41])}, title="Soak <1>", warmup=5)
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "Soak &lt;1&gt;" in svg
