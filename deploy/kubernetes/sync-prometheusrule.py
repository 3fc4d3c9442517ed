"""Write deploy/kubernetes/base/prometheusrule.yaml from deploy/prometheus/alerts.yml (the same rules, for
prometheus-operator). Run after changing alerts.yml: `python deploy/kubernetes/sync-prometheusrule.py`;
tests/unit/deploy/test_kubernetes.py fails while the two differ."""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "prometheus" / "alerts.yml"
TARGET = HERE / "base" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/kubernetes/sync-prometheusrule.py: edit alerts.yml and
# run that script (a test fails while they differ). What each alert means: RUNBOOK.md, section "Alerts".
# Your Prometheus must select it (ruleSelector; many installs want a `release` label).
"""


def render() -> str:
    """The PrometheusRule document for the current alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "gatehouse", "labels": {"app.kubernetes.io/component": "server"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")
