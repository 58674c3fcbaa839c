# The project's verbs. Each target does its own set-up: nobody needs to remember an order.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aegis-installed
# torch first, exactly this version: the CPU wheel on disk. Any other spec pulls GBs of CUDA.
TORCH := torch==2.13.0
# pulumi-policy pins protobuf 5.29 while dbt-core 1.11 needs protobuf 6; its gencode
# runs on the protobuf 6 runtime, so it is installed without its pins
# (docs/decisions/0001-pulumi-policy-protobuf.md).
PULUMI_POLICY := pulumi-policy==1.21.0
PYTEST_ARGS ?=
# Two workers (this project's machines have 2 cores); a test file stays on one worker, so a
# module's world server or warehouse fixture is built once.
XDIST ?= -n 2 --dist loadfile

.PHONY: install up alerting-tools test test-fast test-slow bench lint format clean help

help:
	@echo "make up      install, then run the local stack (world server, Dagster, MLflow)"
	@echo "make test    install, then run the tests (slow end-to-end ones too when CI=true or SLOW=1)"
	@echo "make bench   install, then run benchmarks/ and print their figures"
	@echo "make lint    ruff + mypy"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(PULUMI_POLICY)
	@touch $@

install: $(STAMP)

up: install alerting-tools
	$(BIN)/aegis up

# Prometheus and Alertmanager (Debian packages) for the alerting part of `aegis up`:
# installed where we can (root with apt-get); otherwise say what to install.
alerting-tools:
	@if command -v prometheus >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing prometheus and prometheus-alertmanager (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null) \
	  || echo "warning: could not install them; alerting runs without Prometheus/Alertmanager"; \
	else echo "note: alerting runs without Prometheus/Alertmanager; install them with:" \
	  "sudo apt-get install prometheus prometheus-alertmanager"; fi

test: install
	$(BIN)/pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)
	@if [ -n "$$CI" ] || [ -n "$$SLOW" ]; then \
	  $(BIN)/pytest -m slow $(XDIST) --durations=15 $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc; \
	else echo "slow end-to-end tests skipped locally: run 'SLOW=1 make test' (CI runs them)"; fi

test-fast: install
	$(BIN)/pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

test-slow: install
	$(BIN)/pytest -m slow $(XDIST) $(PYTEST_ARGS)

bench: install
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b; done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .aegis .pytest_cache .ruff_cache .mypy_cache dbt/target dbt/logs
