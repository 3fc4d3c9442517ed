"""Every metric a dashboard panel, a recording rule, an alert or the Kubernetes PrometheusRule reads exists in
Gatehouse's own /metrics: a renamed metric breaks this test, not a graph or an alert months later.

A real server (the demo model) answers a chat and a stream first, so the gateway's labelled series exist; then
/metrics is parsed with prometheus-client's text parser. A family is known by the names its samples take:
a counter `x` by `x_total` (and `x_created`), a histogram by `x_bucket`, `x_sum`, `x_count`; a family with
labels but no sample yet still announces itself with its TYPE line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import GatehouseServer

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))

# PromQL words that look like names: keywords, and functions when written without their parenthesis.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"inf", "nan", "atan2"}
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    # Label lists of by/without/on/ignoring/group_left/group_right.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def rule_expressions(path: Path, *, kubernetes: bool = False) -> dict[str, str]:
    """{rule name: expression} of a rules file (or of a PrometheusRule's spec)."""
    document = yaml.safe_load(path.read_text())
    groups = document["spec"]["groups"] if kubernetes else document["groups"]
    return {rule.get("alert") or rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions(path: Path) -> dict[str, str]:
    """{panel title #n: expression} of every query of a Grafana dashboard, nested rows included."""
    found: dict[str, str] = {}

    def walk(panels: list[dict[str, object]]) -> None:
        for panel in panels:
            for index, target in enumerate(panel.get("targets", []) or []):  # type: ignore[union-attr]
                found[f"{panel['title']} #{index}"] = str(target["expr"])  # type: ignore[index]
            walk(panel.get("panels", []) or [])  # type: ignore[arg-type]

    dashboard = json.loads(path.read_text())
    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            text = query["query"] if isinstance(query, dict) else str(query)
            found[f"variable {variable['name']}"] = re.sub(r"^label_values\((\w+),.*\)$", r"\1", text)
    return found


def test_names_are_read_from_expressions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(gatehouse_x_bucket{route!~"/a|/b",job=~"$job"}[5m])))'
        " > 2 and on (job) job:gatehouse_y:rate5m > 1/60 unless time() - max(z_seconds offset 1h) > 3600"
    )
    assert metric_names(expr) == {"gatehouse_x_bucket", "job:gatehouse_y:rate5m", "z_seconds"}
    assert metric_names("predict_linear(min by (path) (free_bytes)[6h:5m], 24 * 3600) < 0") == {"free_bytes"}
    # Every rule reads something: an extractor that dropped names would make the test below pass vacuously.
    assert all(metric_names(expr) for expr in rule_expressions(ALERTS).values())


def exposed_names(server: GatehouseServer) -> tuple[set[str], set[str]]:
    """(every sample name /metrics can carry, the names of samples it carries now) after a chat and a stream."""
    with server.client() as client:
        body = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
            assert stream.status_code == 200
            assert any("[DONE]" in line for line in stream.iter_lines())
        assert client.post("/v1/embeddings", json={"model": "demo-embed", "input": "x"}).status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    possible: set[str] = set()
    present: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        possible.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
        present.update(sample.name for sample in family.samples)
    return possible, present


def test_every_metric_the_deployment_reads_is_exposed(server: GatehouseServer) -> None:
    possible, present = exposed_names(server)
    # The gateway's own series exist now, with the labels the panels group by.
    assert {"gatehouse_upstream_ttft_seconds_bucket", "gatehouse_stream_duration_seconds_count"} <= present
    assert "gatehouse_tokens_total" in present

    rules = rule_expressions(ALERTS)
    records = {name for name in rules if ":" in name}
    sources = {
        **{f"alerts.yml {name}": expr for name, expr in rules.items()},
        **{f"PrometheusRule {name}": expr for name, expr in rule_expressions(PROMETHEUS_RULE, kubernetes=True).items()},
    }
    assert DASHBOARDS, "no dashboard in deploy/grafana"
    for dashboard in DASHBOARDS:
        sources.update({f"{dashboard.name} {title}": expr for title, expr in dashboard_expressions(dashboard).items()})

    missing = {
        f"{source}: {name}"
        for source, expr in sources.items()
        for name in metric_names(expr)
        if name not in possible and name not in records
    }
    assert not missing, "not in Gatehouse's /metrics:\n" + "\n".join(sorted(missing))


def test_the_check_sees_a_renamed_metric(server: GatehouseServer) -> None:
    possible, _ = exposed_names(server)
    assert "gatehouse_http_request_duration_seconds_bucket" in possible
    assert "gatehouse_http_request_duration_seconds" not in possible, "a histogram is read through its samples"
    assert "gatehouse_http_requests_total" not in possible
