"""deploy/kubernetes: both overlays render with `kubectl kustomize`, every document is valid against the Kubernetes
schemas of a current release (kubernetes-validate's bundled schemas, strict: unknown fields are errors) or, for
prometheus-operator's kinds, against their CRDs' openAPIV3Schema (vendored: schemas/prometheus-operator/SOURCE.md),
and the objects are wired as the runbook promises (probes, drain, migrations, secrets as files, network policy,
backup CronJob, the same alert rules as deploy/prometheus/alerts.yml).

The Ingress's cert-manager part is an annotation only (no cert-manager object is rendered), so no cert-manager CRD
is needed. Everything here is offline: kubectl's kustomize needs no cluster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gatehouse.core.shutdown import SETTLE_SECONDS
from gatehouse.jobs.routes import JOB_TOKEN_HEADER
from gatehouse.settings import Settings
from gatehouse.upstreams.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[3]
KUBERNETES = ROOT / "deploy" / "kubernetes"
CRDS = Path(__file__).parent / "schemas" / "prometheus-operator"
KUBERNETES_VERSION = "1.37"  # the newest release kubernetes-validate carries schemas for (checked below)
OVERLAYS = ("single", "ha")
PRE_STOP_SECONDS = 10
# What `gatehouse serve` takes to stop on SIGTERM with the default settings: the drain, the deadline, then the
# settle time uvicorn gives what the deadline ended (core/shutdown.py).
DRAIN_SECONDS = (
    Settings.model_fields["shutdown_drain_seconds"].default
    + Settings.model_fields["shutdown_deadline_seconds"].default
    + SETTLE_SECONDS
)
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}

Doc = dict[str, Any]


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    """`kubectl kustomize` of an overlay, as documents."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("SKIPPED: kubectl is not installed, so the kustomize overlays cannot be rendered here")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(docs: tuple[Doc, ...], kind: str) -> Doc:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])


def test_the_schemas_are_of_a_current_release() -> None:
    assert kubernetes_validate.utils.latest_version().startswith(KUBERNETES_VERSION)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_is_valid(overlay: str) -> None:
    docs = render(overlay)
    problems: list[str] = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("namespace", "gatehouse") == "gatehouse", name
        if doc["kind"] in CRD_FILES:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1", name
            problems += [f"{name}: {e.json_path}: {e.message}" for e in crd_validator(doc["kind"]).iter_errors(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name}: {'.'.join(map(str, error.path))}: {error.message}")
    assert not problems, "\n".join(problems)


def test_validation_catches_mistakes() -> None:
    deployment = dict(one(render("ha"), "Deployment"))
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    monitor = yaml.safe_load(yaml.safe_dump(one(render("ha"), "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["interval"] = "often"
    assert list(crd_validator("ServiceMonitor").iter_errors(monitor))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_drain_and_migrations(overlay: str) -> None:
    docs = render(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert server["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_SECONDS)]
    assert pod["terminationGracePeriodSeconds"] >= PRE_STOP_SECONDS + DRAIN_SECONDS + 10
    (migrate,) = pod["initContainers"]
    assert migrate["args"] == ["db", "upgrade"] and migrate["image"] == server["image"]
    environment = _environment(docs)
    assert environment["RUN_MIGRATIONS"] == "false"
    for container in (server, migrate):
        assert {"configMapRef": {"name": environment["__name__"]}} in container["envFrom"]


def _environment(docs: tuple[Doc, ...]) -> dict[str, str]:
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gatehouse-env")]
    return {**config_map["data"], "__name__": config_map["metadata"]["name"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(overlay: str) -> None:
    docs = render(overlay)
    pods = [one(docs, "Deployment")["spec"]["template"]["spec"]]
    pods.append(one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_real_and_secrets_are_files(overlay: str) -> None:
    docs = render(overlay)
    environment = _environment(docs)
    environment.pop("__name__")
    settings = {name.upper() for name in Settings.model_fields}
    known = settings | {f"{name}_FILE" for name in settings} | {"FORWARDED_ALLOW_IPS"}
    assert set(environment) - known == set(), "not Gatehouse settings"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "gatehouse-secrets"
    files = {name: value for name, value in environment.items() if name.endswith("_FILE")}
    assert {"JWT_SECRET_FILE", "JOB_TOKEN_FILE", "METRICS_TOKEN_FILE", "BACKUP_KEY_FILE"} <= set(files)
    for name, path in files.items():
        assert path.startswith(mounts["secrets"] + "/"), f"{name}={path} is not in the mounted Secret"
        assert name.removesuffix("_FILE") not in environment, f"{name.removesuffix('_FILE')} given in plain text"
    # The upstream config: the ConfigMap mounted where GATEHOUSE_CONFIG points, and valid.
    config_dir, config_file = environment["GATEHOUSE_CONFIG"].rsplit("/", 1)
    assert mounts["config"] == config_dir
    (config_map,) = [d for d in docs if d["metadata"]["name"] == volumes["config"]["configMap"]["name"]]
    GatewayConfig.model_validate(yaml.safe_load(config_map["data"][config_file]))
    assert mounts["tmp"] == "/tmp" and mounts["data"] == environment["DATA_DIR"]
    if overlay == "single":
        assert environment["DATABASE_URL"] == "sqlite:////data/gatehouse.db"
        assert (
            volumes["data"]["persistentVolumeClaim"]["claimName"]
            == one(docs, "PersistentVolumeClaim")["metadata"]["name"]
        )
        assert one(docs, "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    else:
        assert environment["REDIS_URL"].startswith("redis://") and environment["DB_HOST"]
        assert environment["DB_PASSWORD_FILE"].startswith(mounts["secrets"] + "/")
        assert mounts["backups"] == environment["BACKUP_DIR"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_point_at_each_other(overlay: str) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")

    def selects(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(key) == value for key, value in selector.items())

    assert selects(service["spec"]["selector"])
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    assert selects(one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"])
    cron_labels = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not all(cron_labels.get(k) == v for k, v in service["spec"]["selector"].items()), (
        "Service selects the CronJob"
    )
    monitor = one(docs, "ServiceMonitor")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == {
        "name": "gatehouse-secrets",
        "key": "metrics_token",
    }
    ingress = one(docs, "Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts and hosts <= set(ingress["spec"]["tls"][0]["hosts"]) and ingress["spec"]["tls"][0]["secretName"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    autoscalers = [doc for doc in docs if doc["kind"] == "HorizontalPodAutoscaler"]
    if overlay == "ha":
        (hpa,) = autoscalers
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] >= 3 and deployment["spec"]["replicas"] >= 3
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    else:
        assert autoscalers == [] and deployment["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_lets_out_only_dns_upstreams_and_the_data_stores(overlay: str) -> None:
    policy = one(render(overlay), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    sources = [peer for rule in policy["ingress"] for peer in rule["from"]]
    names = {str(peer.get("namespaceSelector", {}).get("matchLabels", {})) for peer in sources}
    assert any("ingress-nginx" in n for n in names) and any("monitoring" in n for n in names)
    destinations: list[tuple[str, set[int]]] = []
    for rule in policy["egress"]:
        assert rule.get("to") and rule.get("ports"), f"an egress rule open to everything: {rule}"
        ports = {port["port"] for port in rule["ports"]}
        for peer in rule["to"]:
            if "ipBlock" in peer:
                destinations.append(("cidr", ports))
                assert peer["ipBlock"]["cidr"] != "0.0.0.0/0"
            else:
                labels = {**peer.get("podSelector", {}).get("matchLabels", {})}
                destinations.append((labels.get("k8s-app") or labels["app.kubernetes.io/name"], ports))
    expected = {("kube-dns", frozenset({53})), ("cidr", frozenset({443, 11434}))}
    if overlay == "ha":
        expected |= {("postgresql", frozenset({5432})), ("redis", frozenset({6379}))}
    assert {(name, frozenset(ports)) for name, ports in destinations} == expected


def test_backup_cronjob_calls_the_real_job_route_with_the_job_token() -> None:
    from gatehouse.app import create_app
    from tests.conftest import make_settings

    cron = one(render("ha"), "CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    compile(script, "backup-trigger", "exec")  # a syntax error would only show at 03:00
    (url,) = re.findall(r'"(http://[^"]+)"', script)
    assert url == "http://gatehouse:8000/admin/jobs/backup/run"
    assert f'"{JOB_TOKEN_HEADER}"'.lower() in script.lower()
    assert container["volumeMounts"][0]["mountPath"] + "/job_token" in script
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    app = create_app(make_settings("sqlite+aiosqlite:///:memory:", ROOT / "data"))
    # From the OpenAPI document: it lists routes of included routers on every FastAPI version.
    # (the token header is read by the route's access declaration, require(..., token_header=JOB_TOKEN_HEADER)).
    assert "post" in app.openapi()["paths"]["/admin/jobs/{name}/run"]


def test_prometheus_rule_holds_the_same_rules_as_alerts_yml() -> None:
    rule = one(render("ha"), "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], (
        "deploy/kubernetes/base/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: "
        "run `python deploy/kubernetes/sync-prometheusrule.py`"
    )
