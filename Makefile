# Gatehouse: `make run` serves on http://127.0.0.1:8000 (SQLite, demo model); `make test` runs everything.
# Both install what they need first: uv (into .tools/ when not on PATH), then the locked environment in .venv.

SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test check lint format install services bench clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

install: $(UV)
	$(UV) sync --frozen --quiet

run: install
	$(UV) run --frozen gatehouse serve --host $(HOST) --port $(PORT)

services:
	bash scripts/test-services.sh

check: install
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen mypy

test: install services check
	$(UV) run --frozen pytest $(PYTEST_ARGS)

format: install
	$(UV) run --frozen ruff format src tests bench
	$(UV) run --frozen ruff check --fix src tests bench

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache
