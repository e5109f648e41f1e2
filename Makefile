# The two commands of the README, plus the UI. Each bootstraps what it needs.
SHELL := /bin/bash
# uv from PATH, else the one pip installs into this Python (bootstrap below).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export UV_LINK_MODE ?= copy
# Compile bytecode at install: test workers and steps start without compiling every import.
export UV_COMPILE_BYTECODE ?= 1
# Two workers, one test file each at a time: most tests wait on servers, not on the CPU.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test dev lint types validate unit bootstrap system-packages

bootstrap:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet
	@mkdir -p "$(DAGSTER_HOME)"

## Run the nightly sync on the embedded sandbox and print the summary.
demo: bootstrap
	@$(UV) run --frozen crm-pipelines demo $(ARGS)

## The sandbox plus the Dagster UI on http://localhost:3000.
dev: bootstrap
	@$(UV) run --frozen crm-pipelines dev $(ARGS)

## Lint, types and the test suite.
test: bootstrap system-packages lint types validate unit

validate:
	@$(UV) run --frozen dg check defs >/dev/null 2>&1 || $(UV) run --frozen dg check defs

system-packages:
	@bash scripts/install-system-packages.sh

lint:
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .

types:
	@$(UV) run --frozen mypy

unit:
	@$(UV) run --frozen pytest $(PYTEST_ARGS)
