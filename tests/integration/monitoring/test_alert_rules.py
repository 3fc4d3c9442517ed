"""The Prometheus alerting rules pass `promtool check rules` and their unit tests (`promtool test rules`).

Runs scripts/promtool-test.sh, which installs promtool (Debian's `prometheus` package) when it is missing
and it can. A machine where promtool cannot be had fails this test with the script's explanation: the
rules are never left untested silently.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "promtool-test.sh"


def test_alert_rules_pass_promtool() -> None:
    try:
        result = subprocess.run(
            ["bash", str(SCRIPT)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{SCRIPT.name} did not finish within 300 s:\n{exc.stdout}\n{exc.stderr}") from exc
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{SCRIPT.name} exited {result.returncode}:\n{output}"
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout), output
    assert "Unit Testing:  deploy/prometheus/alerts_test.yml\n  SUCCESS" in result.stdout, output
