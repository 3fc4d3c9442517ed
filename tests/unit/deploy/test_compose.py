"""deploy/compose/compose.yaml: valid against the Compose Specification's JSON schema, its variables documented,
and its wiring right (profiles, secrets as NAME_FILE, migrations before replicas, drain time, proxy targets).

The schema is vendored from compose-spec/compose-spec (schemas/compose-spec/SOURCE.md). No container engine is
needed: the file is interpolated here the way Compose does it, with the defaults it carries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gatehouse.core.shutdown import SETTLE_SECONDS
from gatehouse.settings import Settings
from gatehouse.upstreams.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec" / "compose-spec.json"

REPLICAS = ("gatehouse-1", "gatehouse-2", "gatehouse-3")
# What `gatehouse serve` takes to stop on SIGTERM with the default settings: the drain, the deadline, then the
# settle time uvicorn gives what the deadline ended (core/shutdown.py).
DRAIN_SECONDS = (
    Settings.model_fields["shutdown_drain_seconds"].default
    + Settings.model_fields["shutdown_deadline_seconds"].default
    + SETTLE_SECONDS
)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}; `$$` is a literal `$`.
VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of `text` with `env` (unset names take their inline default)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        value = env.get(name)
        if operator in (":-", "-"):
            unset = value is None or (operator == ":-" and value == "")
            return argument if unset else str(value)
        if operator in (":?", "?"):
            if value is None or (operator == ":?" and value == ""):
                raise AssertionError(f"{name} is required: {argument}")
            return value
        if operator in (":+", "+"):
            return argument if value else ""
        return value or ""

    # Comments are not interpolated by Compose either (YAML drops them first).
    return "\n".join(
        VARIABLE.sub(replace, line) if not line.lstrip().startswith("#") else line for line in text.splitlines()
    )


def variables(text: str) -> dict[str, set[str]]:
    """Each interpolation variable of the file (outside comments) with the defaults it is given."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in VARIABLE.finditer(line):
            name = match.group(1) or match.group(4)
            if name:
                defaults = found.setdefault(name, set())
                if match.group(2) in (":-", "-"):
                    defaults.add(match.group(3) or "")
    return found


def documented_variables() -> dict[str, str]:
    """NAME=value lines of deploy/compose/.env.example, each of which must follow a comment."""
    documented: dict[str, str] = {}
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            above = [item for item in lines[:index] if item.strip()]
            assert above and (above[-1].startswith("#") or re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", above[-1])), (
                f"{match.group(1)} in {ENV_EXAMPLE.name} needs a comment above it (or above its block)"
            )
            documented[match.group(1)] = match.group(2)
    return documented


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file, interpolated with its own defaults."""
    return dict(yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), {})))


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda error: list(error.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_mistake(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["gatehouse"]["depends_on"] = {"postgres": {"condition": "service_ready"}}
    broken["services"]["gatehouse"]["stop_grace_perod"] = "45s"
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    messages = [error.message for error in validator.iter_errors(broken)]
    assert any("service_ready" in message for message in messages), messages
    assert any("stop_grace_perod" in message for message in messages), messages


def test_every_variable_is_documented_with_its_default() -> None:
    used = variables(COMPOSE_FILE.read_text())
    documented = documented_variables()
    assert set(used) - set(documented) == set(), f"document these in {ENV_EXAMPLE.relative_to(ROOT)}"
    assert set(documented) - set(used) == set(), f"these in {ENV_EXAMPLE.relative_to(ROOT)} are not used"
    for name, defaults in used.items():
        assert len(defaults) == 1, f"{name} has different defaults in compose.yaml: {sorted(defaults)}"
        assert documented[name] == next(iter(defaults)), f"{name}: .env.example says {documented[name]!r}"


def test_profiles_single_and_ha(compose: dict[str, Any]) -> None:
    services = compose["services"]
    by_profile: dict[str, set[str]] = {}
    for name, service in services.items():
        assert service.get("profiles"), f"service {name} belongs to no profile: it would start in both"
        for profile in service["profiles"]:
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile["single"] == {"gatehouse"}
    assert {*REPLICAS, "migrate", "postgres", "redis", "proxy", "prometheus"} <= by_profile["ha"]
    assert set(by_profile) == {"single", "ha"}
    assert "gatehouse-data:/data" in services["gatehouse"]["volumes"]
    assert "DB_HOST" not in services["gatehouse"]["environment"], "single runs on SQLite"


def _gatehouse_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("gatehouse")}


def test_gatehouse_settings_are_real_and_secrets_come_from_mounted_files(compose: dict[str, Any]) -> None:
    settings = {name.upper() for name in Settings.model_fields}
    known = settings | {f"{name}_FILE" for name in settings} | {"FORWARDED_ALLOW_IPS"}
    secrets = compose["secrets"]
    services = _gatehouse_services(compose)
    assert set(services) == {"gatehouse", "migrate", *REPLICAS}
    for name, service in services.items():
        environment = service["environment"]
        assert set(environment) - known == set(), f"{name}: not Gatehouse settings"
        assert environment["ENVIRONMENT"] == "prod"
        mounted = set(service["secrets"])
        for variable, value in environment.items():
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert value.startswith("/run/secrets/") and secret in mounted, f"{name}: {variable} -> {value}"
                assert secret in secrets
        for secret_name in ("JWT_SECRET", "BOOTSTRAP_ADMIN_API_KEY", "JOB_TOKEN", "METRICS_TOKEN", "BACKUP_KEY"):
            assert secret_name not in environment, f"{name}: {secret_name} must come from a file"
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert service["user"] == "10001:10001" and service["cap_drop"] == ["ALL"]


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, f"not a duration: {duration}"
    return sum(float(amount) * units[unit] for amount, unit in parts)


def test_migration_runs_once_before_the_replicas_and_stops_cover_the_drain(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in REPLICAS:
        replica = services[name]
        assert replica["environment"]["RUN_MIGRATIONS"] == "false"
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
        assert replica["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
        assert "ports" not in replica, "replicas are reached through the proxy only"
        # One backup directory for all, where the image's user owns it (a new volume copies the image's owner).
        assert "backups:/data/backups" in replica["volumes"] and "BACKUP_DIR" not in replica["environment"]
    for name in (*REPLICAS, "gatehouse", "proxy"):
        assert _seconds(services[name]["stop_grace_period"]) >= DRAIN_SECONDS + 10, name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health, never checked"


def test_files_the_compose_file_mounts_exist_and_the_upstream_config_loads(compose: dict[str, Any]) -> None:
    for name, config in compose["configs"].items():
        path = (COMPOSE_DIR / config["file"]).resolve()
        assert path.is_file(), f"config {name}: {path} is missing"
    GatewayConfig.model_validate(
        yaml.safe_load((COMPOSE_DIR / compose["configs"]["gatehouse_config"]["file"]).read_text())
    )
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("./secrets/"), f"secret {name} outside SECRETS_DIR"
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert "/secrets/" in ignored and "/.env" in ignored


def test_proxy_balances_the_replicas_on_readiness_and_prometheus_scrapes_each(compose: dict[str, Any]) -> None:
    haproxy = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server (\S+) (\S+):8000 check", haproxy, flags=re.M)
    assert servers == [(name, name) for name in REPLICAS]
    assert "http-check send meth GET uri /readyz" in haproxy
    assert re.search(r"bind :8443 ssl crt /run/secrets/tls\.pem", haproxy)
    assert {"source": "tls_pem", "target": "tls.pem"} in compose["services"]["proxy"]["secrets"]

    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (gatehouse_job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "gatehouse"]
    assert gatehouse_job["static_configs"][0]["targets"] == [f"{name}:8000" for name in REPLICAS]
    assert gatehouse_job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert "metrics_token" in compose["services"]["prometheus"]["secrets"]
    mounted = {c["target"] for c in compose["services"]["prometheus"]["configs"]}
    assert set(prometheus["rule_files"]) <= mounted


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET:-x} ${UNSET:-x} ${EMPTY:-x} ${EMPTY-x} $$HOME ${SET}", env) == "value x x  $HOME value"
    with pytest.raises(AssertionError, match="needed"):
        interpolate("${UNSET:?needed}", env)


def test_haproxy_accepts_its_configuration(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("SKIPPED: haproxy is not installed (bash scripts/test-services.sh installs it)")
    pem = tmp_path / "tls.pem"
    pem.write_bytes(self_signed_pem())
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text().replace("/run/secrets/tls.pem", str(pem))
    )
    result = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Configuration file is valid" in output, output
    # The replicas' names resolve only inside compose's network; any other warning is a finding.
    warnings = [line for line in output.splitlines() if "[WARNING]" in line and "could not resolve address" not in line]
    assert not warnings, output


def self_signed_pem() -> bytes:
    """A throwaway certificate chain and key in one PEM, as the proxy's tls.pem secret holds them."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatehouse.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + key_pem
