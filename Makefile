# Gatehouse: `make run` serves on http://127.0.0.1:8000 (SQLite, demo model); `make test` runs everything.
# Both install what they need first: uv (into .tools/ when not on PATH), then the locked environment in .venv.

SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=
SOAK_MINUTES ?= 30
SOAK_ARGS ?=

.PHONY: run test check lint format install services bench soak clean screenshots

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

# Bytecode is compiled here, once, because Python may be told not to write it (PYTHONDONTWRITEBYTECODE, set on
# some CI machines and containers): without .pyc files every start compiles ~1,000 modules, seconds of CPU.
# An up-to-date tree is checked in about a second.
install: $(UV)
	$(UV) sync --frozen --quiet
	$(UV) run --frozen python -m compileall -q -j 0 src $$($(UV) run --frozen python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') >/dev/null

run: install
	$(UV) run --frozen gatehouse serve --host $(HOST) --port $(PORT)

services:
	bash scripts/test-services.sh

check: install
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen mypy
	$(UV) run --frozen lint-imports

test: install services check
	$(UV) run --frozen pytest $(PYTEST_ARGS)

# The console's pages at 1280 and 390 px, taken by its browser tests on SQLite, into docs/console/.
screenshots: install services
	GATEHOUSE_SCREENSHOTS=1 $(UV) run --frozen pytest tests/e2e/console -q -k "sqlite and not replicas"

# `make bench BENCH_ARGS="--quick"`: see bench/README.md. Installs wrk (apt, as root) and, once, LiteLLM into .tools/litellm.
bench: install services
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
		else \
			echo "make bench: wrk is missing; install it (apt-get install wrk) and run again" >&2; exit 1; \
		fi; }
	UV=$(UV) $(UV) run --frozen python -m bench $(BENCH_ARGS)

# `SOAK_MINUTES=3 make soak`: mixed traffic against the local HA topology while operators act; rewrites the Soak
# section of docs/reliability.md and exits non-zero when a criterion fails. Not part of `make test`: bench/README.md.
soak: install services
	$(UV) run --frozen python -m bench.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

format: install
	$(UV) run --frozen ruff format src tests bench
	$(UV) run --frozen ruff check --fix src tests bench

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache
