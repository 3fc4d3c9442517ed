"""Tracing off (the default) costs nothing: the app starts and serves a chat without importing OpenTelemetry's
SDK or exporter, or Gatehouse's own SDK module. (FastAPI itself imports the OpenTelemetry *API*, the small
package of interfaces its built-in telemetry is written against, which Gatehouse turns off; the SDK, which makes and
exports spans, is what tracing adds.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gatehouse.core import tracing

ROOT = Path(__file__).resolve().parents[3]
SDK_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto", "gatehouse.core.otel")

# Started twice in a fresh interpreter: off (the default), then on but with the SDK's own OTEL_SDK_DISABLED=true.
SERVE_CHATS = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from tests.conftest import make_settings, running_app

    async def serve_one_chat(directory, enabled):
        directory.mkdir()
        settings = make_settings(f"sqlite+aiosqlite:///{directory}/gatehouse.db", directory, otel_enabled=enabled)
        async with running_app(settings) as harness:
            body = {"model": "demo", "messages": [{"role": "user", "content": "hello"}], "stream": True}
            response = await harness.client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            assert harness.runtime.gateway.tracer is None and harness.app.state.tracer is None

    root = Path(sys.argv[1])
    asyncio.run(serve_one_chat(root / "off", False))
    os.environ["OTEL_SDK_DISABLED"] = "true"
    asyncio.run(serve_one_chat(root / "disabled", True))
    print(" ".join(sorted(name for name in sys.modules if name.startswith(MODULES))))
    """
)


def test_off_imports_no_sdk(tmp_path: Path) -> None:
    script = f"MODULES = {SDK_MODULES!r}\n{SERVE_CHATS}"
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == []


def test_the_sdks_own_switch_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    assert not tracing.tracing_wanted(True)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    assert tracing.tracing_wanted(True) and not tracing.tracing_wanted(False)


def test_on_without_the_sdk_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import gatehouse.core

    monkeypatch.delitem(sys.modules, "gatehouse.core.otel", raising=False)
    monkeypatch.delattr(gatehouse.core, "otel", raising=False)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the `otel` extra were not installed
    with pytest.raises(tracing.TracingUnavailable, match=r"gatehouse\[otel\].*OTEL_ENABLED=false"):
        tracing.start_tracing(service_version="test")
