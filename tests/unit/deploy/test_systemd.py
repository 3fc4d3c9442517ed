"""deploy/systemd: the unit passes `systemd-analyze verify` (and scores as hardened in `systemd-analyze security`),
its secrets reach Gatehouse as NAME_FILE settings read in place (so a reload picks up a rotated file), and its
stop timeout covers the drain.

`systemd-analyze` comes with Debian's systemd package; where it is missing the verify checks are skipped (saying
so) and the unit is still checked by the parser below. verify needs the ExecStart binary to exist: the copy
checked points at this checkout's `gatehouse` instead of /opt/gatehouse/current's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gatehouse.cli import app as cli_app
from gatehouse.core.shutdown import SETTLE_SECONDS
from gatehouse.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "gatehouse.service"
INSTALLED_BINARY = "/opt/gatehouse/current/.venv/bin/gatehouse"
# What `gatehouse serve` takes to stop on SIGTERM with the default settings: the drain, the deadline, then the
# settle time uvicorn gives what the deadline ended (core/shutdown.py).
DRAIN_SECONDS = (
    Settings.model_fields["shutdown_drain_seconds"].default
    + Settings.model_fields["shutdown_deadline_seconds"].default
    + SETTLE_SECONDS
)
SETTINGS = {name.upper() for name in Settings.model_fields}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists: keys repeat (LoadCredential=, Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a setting outside any section: {line}"
        key, separator, value = line.partition("=")
        assert separator, f"not key=value: {line}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("SKIPPED: systemd-analyze is not installed; the unit is checked by the parser tests only")
    binary = ROOT / ".venv" / "bin" / "gatehouse"
    assert binary.exists(), "run `make install` first"
    copy = tmp_path / "gatehouse.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(binary)))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys too, with a warning: any output is a finding.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    exposure = re.search(r"Overall exposure level for gatehouse\.service: ([\d.]+)", security.stdout)
    assert exposure, security.stdout[-2000:] + security.stderr
    assert float(exposure.group(1)) <= 2.0, security.stdout[-3000:]


def test_verify_would_catch_a_misspelt_key(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("SKIPPED: systemd-analyze is not installed")
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=/bin/true\nProtectSystm=strict\n")
    result = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert "ProtectSystm" in result.stderr


def test_unit_is_hardened_and_covers_the_drain() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    one = {key: value for key, value in service}
    assert one["User"] != "root" or one.get("DynamicUser") == "yes"
    assert one["ProtectSystem"] == "strict" and one["NoNewPrivileges"] == "yes"
    assert one["StateDirectory"] == "gatehouse" and one["WorkingDirectory"] == "/var/lib/gatehouse"
    assert one["EnvironmentFile"] == "/etc/gatehouse/gatehouse.env"
    assert one["Restart"] == "on-failure"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["ExecStart"].startswith(INSTALLED_BINARY + " serve ")
    timeout = re.fullmatch(r"(\d+)s", one["TimeoutStopSec"])
    assert timeout and int(timeout.group(1)) >= DRAIN_SECONDS + 10
    assert one["CapabilityBoundingSet"] == ""


def test_every_secret_is_a_file_read_in_place() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    # LoadCredential copies a secret at start only: a rotated file would then need a restart, not a reload.
    assert values(service, "LoadCredential") == []
    environment = dict(value.split("=", 1) for value in values(service, "Environment"))
    file_settings = {key: value for key, value in environment.items() if key.endswith("_FILE")}
    for key, path in file_settings.items():
        assert path == f"/etc/gatehouse/credentials/{key.removesuffix('_FILE').lower()}"
    assert {key.removesuffix("_FILE") for key in file_settings} <= SETTINGS
    assert {"JWT_SECRET_FILE", "JOB_TOKEN_FILE", "METRICS_TOKEN_FILE", "BACKUP_KEY_FILE"} <= set(file_settings)
    # The rotation windows' files, created empty by the install note.
    assert {"JWT_SECRET_PREVIOUS_FILE", "JOB_TOKEN_PREVIOUS_FILE", "METRICS_TOKEN_PREVIOUS_FILE"} <= set(file_settings)


def test_example_environment_file_holds_only_settings_and_no_secrets() -> None:
    lines = (SYSTEMD / "gatehouse.env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert names <= SETTINGS | {"FORWARDED_ALLOW_IPS"}, names - SETTINGS
    assert not names & {"JWT_SECRET", "JOB_TOKEN", "METRICS_TOKEN", "BACKUP_KEY", "BOOTSTRAP_ADMIN_API_KEY"}


def test_commands_in_the_install_note_exist() -> None:
    import typer.main

    root = typer.main.get_command(cli_app)
    text = (SYSTEMD / "INSTALL.md").read_text()
    found = re.findall(r"(?:gatehouse-cli|bin/gatehouse) ([a-z][a-z-]*) ([a-z][a-z-]*)", text)
    assert found
    for group, command in found:
        sub = root.commands.get(group)  # type: ignore[attr-defined]
        assert sub is not None, f"INSTALL.md names `gatehouse {group}`, which does not exist"
        if hasattr(sub, "commands"):
            assert command in sub.commands, f"INSTALL.md names `gatehouse {group} {command}`, which does not exist"
