"""deploy/Containerfile, checked without a container engine (scripts/image-smoke.sh builds and runs it where one
works): its stages and run-time contract, the build context .dockerignore lets in, and its builder's recipe, run
here for real: `uv sync --frozen --no-dev --no-editable` from uv.lock into a fresh environment, which must hold
Gatehouse's migrations, templates and static files and no development tools, and run `gatehouse version`."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CONTAINERFILE = (ROOT / "deploy" / "Containerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in CONTAINERFILE.splitlines() if not line.startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, flags=re.M)]


def test_two_stages_from_one_slim_python_base() -> None:
    stages = [args for name, args in instructions() if name == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", CONTAINERFILE, flags=re.M)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base)
    runs = " ".join(args for name, args in instructions() if name == "RUN")
    assert (
        "uv sync --frozen --no-dev --no-install-project" in runs and "uv sync --frozen --no-dev --no-editable" in runs
    )
    assert "UV_COMPILE_BYTECODE=1" in CONTAINERFILE


def test_runtime_contract() -> None:
    runtime = CONTAINERFILE.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime and "DATA_DIR=/data" in runtime
    assert 'VOLUME ["/data"]' in runtime and re.search(r"^WORKDIR /$", runtime, flags=re.M)
    (healthcheck,) = [args for name, args in instructions() if name == "HEALTHCHECK"]
    assert "http://127.0.0.1:8000/healthz" in healthcheck
    assert ("ENTRYPOINT", '["gatehouse"]') in instructions()
    assert ("CMD", '["serve", "--host", "0.0.0.0", "--port", "8000"]') in instructions()
    assert "RUN_MIGRATIONS" in runtime


def test_runtime_has_the_postgresql_client_tools_backups_run() -> None:
    from gatehouse.cli.doctor_checks.backups import PG_TOOLS

    steps = instructions()
    start = steps.index(("FROM", "${PYTHON_IMAGE} AS runtime"))
    runs = " ".join(args for name, args in steps[start:] if name == "RUN")
    # postgresql-client-N ships every tool a PostgreSQL backup, verify and restore runs; the build checks pg_dump.
    assert 'install -y --no-install-recommends "postgresql-client-${PG_CLIENT_MAJOR}"' in runs
    assert "pg_dump --version" in runs and set(PG_TOOLS) == {"pg_dump", "pg_restore", "psql"}
    (major,) = re.findall(r"^ARG PG_CLIENT_MAJOR=(\d+)$", CONTAINERFILE, flags=re.M)
    compose = (ROOT / "deploy" / "compose" / "compose.yaml").read_text()
    (server,) = re.findall(r"POSTGRES_IMAGE:-postgres:(\d+)", compose)
    assert int(major) >= int(server), "pg_dump must be of the server's major version or newer"


def test_build_context_holds_what_the_build_copies_and_no_secrets() -> None:
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/") or fnmatch.fnmatch(path, bare.lstrip("*/")):
                keep = negated
        return keep

    copied = [args.split()[:-1] for name, args in instructions() if name == "COPY" and "--from" not in args]
    for sources in copied:
        for source in sources:
            assert included(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
    for path in (".env", "data/gatehouse.db", ".venv/bin/python", "deploy/compose/secrets/jwt_secret", ".git/config"):
        assert not included(path), f"{path} would be sent to the engine"


def test_builder_recipe_installs_a_complete_production_environment(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("SKIPPED: uv is not installed (make install puts it in .tools/)")
    source = tmp_path / "src"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, source / name)
    environment = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_COMPILE_BYTECODE": "1",
        "UV_LINK_MODE": "copy",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PROJECT_ENVIRONMENT": str(environment),
    }
    env.pop("VIRTUAL_ENV", None)
    for extra in (["--no-install-project"], ["--no-editable"]):
        result = subprocess.run(
            [uv, "sync", "--frozen", "--no-dev", "--quiet", *extra],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    shutil.rmtree(source)  # the image's runtime stage has no source tree either
    version = subprocess.run(
        [str(environment / "bin" / "gatehouse"), "version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    (site,) = environment.glob("lib/python3.*/site-packages")
    package = site / "gatehouse"
    assert list((package / "db" / "migrations" / "versions").glob("*.py")), "migrations missing from the wheel"
    assert list((package / "web" / "templates").rglob("*.html")), "templates missing from the wheel"
    assert list((package / "web" / "static").rglob("*.*")), "static files missing from the wheel"
    assert list(package.rglob("__pycache__/*.pyc")), "bytecode not compiled"
    for tool in ("pytest", "mypy", "ruff", "playwright"):
        assert not (site / tool).exists(), f"{tool} (a development tool) is in the production environment"
