"""A real `gatehouse serve` reloads on `gatehouse reload` without Redis (SIGHUP through DATA_DIR/gatehouse.pid):
an upstream key rotated in its OPENAI_API_KEY_FILE is used from then on, and the process keeps serving."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import base_env, run_gatehouse

OLD_KEY = "sk-e2e-old-upstream-key-0123456789"
NEW_KEY = "sk-e2e-new-upstream-key-9876543210"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(api_key=OLD_KEY) as fake:
        yield fake


def test_gatehouse_reload_signals_the_local_server_which_applies_a_rotated_key(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    key_file = tmp_path / "openai_api_key"
    key_file.write_text(OLD_KEY)
    data_dir = tmp_path / "data"
    env = base_env(
        f"sqlite+aiosqlite:///{tmp_path}/gatehouse.db",
        data_dir,
        OPENAI_BASE_URL=upstream.url,
        OPENAI_API_KEY_FILE=str(key_file),
    )
    with run_gatehouse(env, workdir=tmp_path) as server, server.client() as client:
        body = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        pid = int((data_dir / "gatehouse.pid").read_text().split()[0])
        assert pid == server.process.pid

        upstream.set_keys(OLD_KEY, NEW_KEY)
        key_file.write_text(NEW_KEY)
        reload = subprocess.run(
            [sys.executable, "-m", "gatehouse", "reload", "--timeout", "20"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reload.returncode == 0, reload.stdout + reload.stderr
        assert "SIGHUP sent" in reload.stdout and "reloaded" in reload.stdout
        assert "OPENAI_API_KEY" in reload.stdout and NEW_KEY not in reload.stdout
        upstream.set_keys(NEW_KEY)  # the old key revoked: only the reloaded pool can answer
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert server.process.poll() is None  # SIGHUP reloaded; it did not end the process
    assert not (data_dir / "gatehouse.pid").exists()  # removed at exit
