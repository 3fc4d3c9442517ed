"""The Grafana dashboard and its provisioning, and the Alertmanager routing example: well-formed, covering what the
runbook says they show, and pointing at things that exist (alert names, severities, secrets, mount paths).
That their metric names exist is tests/integration/deploy/test_metric_names.py's business."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "gatehouse.json"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def compose_service(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"][name])


def test_dashboard_is_well_formed_and_covers_every_topic() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    rows = [panel["title"] for panel in panels if panel["type"] == "row"]
    for topic in ("Traffic", "Latency", "first token", "Errors", "Limits", "Upstreams", "streams", "Jobs", "backups"):
        assert any(topic.lower() in row.lower() for row in rows), f"no row about {topic}: {rows}"
    assert any("Storage" in row for row in rows)
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{panel['title']}: unknown variables {used - variables}"
    expressions = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    assert "histogram_quantile" in expressions and "gatehouse_upstream_ttft_seconds_bucket" in expressions
    assert "gatehouse_disk_free_bytes" in expressions and "gatehouse_database_size_bytes" in expressions


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = compose_service("grafana")
    mounts = {config["source"]: config["target"] for config in grafana["configs"]}
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "gatehouse.yaml").read_text())
    (only,) = provider["providers"]
    assert Path(mounts["grafana_dashboard_gatehouse"]).parent == Path(only["options"]["path"])
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (prometheus,) = datasource["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"


def test_alertmanager_routes_every_severity_and_inhibits_real_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    routes = config["route"]["routes"]
    assert all(route["receiver"] in receivers for route in routes)
    severities: set[str] = set()
    for rule in alert_rules():
        # A templated severity ('{{ if ... }}page{{ else }}ticket{{ end }}') can take each literal between its actions.
        severity = str(rule["labels"]["severity"])
        severities |= set(re.findall(r"}}(\w+){{", severity)) if "{{" in severity else {severity}
    assert severities == {"page", "ticket"}
    for severity in severities:
        assert any(re.search(severity, " ".join(route["matchers"])) for route in routes), f"no route for {severity}"
    # A webhook and an email receiver, with their secrets from files the compose service mounts.
    kinds = {kind for receiver in receivers.values() for kind in receiver if kind.endswith("_configs")}
    assert {"webhook_configs", "email_configs"} <= kinds
    mounted = {f"/run/secrets/{name}" for name in compose_service("alertmanager")["secrets"]}
    files = re.findall(r"_file: (\S+)", (DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    assert files and set(files) <= mounted
    names = {rule["alert"] for rule in alert_rules()}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            pattern = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            assert pattern, matcher
            for name in pattern.group(1).split("|"):
                assert name in names, f"inhibit rule names {name}, which alerts.yml does not define"


def test_prometheus_scrape_config_reaches_alertmanager_and_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target.split(":")[0] in yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]
    mounts = {c["target"] for c in compose_service("prometheus")["configs"]}
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"] and config["rule_files"][0] in mounts
