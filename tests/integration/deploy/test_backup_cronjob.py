"""The Kubernetes backup CronJob's script (deploy/kubernetes/base/backup-cronjob.yaml), run for real against a
server: with the job token from its mounted file it starts a backup through POST /admin/jobs/backup/run and exits
0 once the backup is written; with a wrong token it exits non-zero saying the server refused it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.deploy.conftest import DeployServer

ROOT = Path(__file__).resolve().parents[3]
CRONJOB = ROOT / "deploy" / "kubernetes" / "base" / "backup-cronjob.yaml"
SERVICE_URL = "http://gatehouse:8000"
TOKEN_PATH = "/run/secrets/gatehouse/job_token"


def trigger_script() -> str:
    cron = yaml.safe_load(CRONJOB.read_text())
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    script = str(container["args"][0])
    assert SERVICE_URL in script and TOKEN_PATH in script
    return script


def run_trigger(deployed: DeployServer, token_file: Path) -> subprocess.CompletedProcess[str]:
    script = trigger_script().replace(SERVICE_URL, deployed.server.url).replace(TOKEN_PATH, str(token_file))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)


def test_the_cronjob_takes_a_backup_with_the_job_token(deployed: DeployServer) -> None:
    before = set(deployed.backup_dir.glob("*")) if deployed.backup_dir.exists() else set()
    result = run_trigger(deployed, deployed.job_token_file)
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(result.stdout)
    assert (run["job"], run["status"], run["trigger"]) == ("backup", "ok", "token")
    assert set(deployed.backup_dir.glob("*")) - before, "no new file in BACKUP_DIR"


def test_the_cronjob_fails_loudly_with_a_wrong_token(deployed: DeployServer, tmp_path: Path) -> None:
    wrong = tmp_path / "job_token"
    wrong.write_text("not-the-job-token-at-all\n")
    result = run_trigger(deployed, wrong)
    assert result.returncode != 0
    assert "backup refused: HTTP 401" in result.stderr or "backup refused: HTTP 403" in result.stderr, result.stderr
