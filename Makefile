# The few verbs people type. `make test` and `make demo` set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# One worker per core (pytest-xdist): the suite is mostly subprocesses and local servers.
PYTEST_ARGS ?= -n auto

.PHONY: help setup test test-unit test-functional test-infrastructure test-e2e lint format demo bench fuzz synth clean

help:
	@echo "make demo   - run a phantom scan through everything that is built and say where results are"
	@echo "make test   - the whole test suite (sets up .venv on first use)"
	@echo "make lint   - ruff (lint + format check) and mypy"
	@echo "make bench  - benchmarks, dicomflow beside its peers, as ratios"
	@echo "make fuzz   - 10 000 mutated DICOM files through validator and de-identifier (SEED=0 N=10000)"
	@echo "make synth  - synthesise the CDK app"

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt layers/dicomflow/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e layers/dicomflow
	@# An editable install ships no bytecode, and PYTHONDONTWRITEBYTECODE may forbid writing it later:
	@# without it every `dicomflow` process compiles the package again (about 50 ms).
	$(PY) -m compileall -q layers/dicomflow/src >/dev/null
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit layers/dicomflow/src $(PYTEST_ARGS)

test-functional: $(STAMP)
	$(PY) -m pytest tests/functional $(PYTEST_ARGS)

test-infrastructure: $(STAMP)
	$(PY) -m pytest tests/infrastructure $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

demo: $(STAMP)
	$(PY) scripts/demo.py

bench: $(STAMP)
	@# gdcmanon (Debian libgdcm-tools) is the C++ peer of the de-identification benchmark.
	@command -v gdcmanon >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && apt-get install -y -qq libgdcm-tools >/dev/null) ; } || \
		echo "bench: gdcmanon not installed (apt-get install libgdcm-tools); its column will be skipped"
	@$(PY) -m compileall -q layers/dicomflow/src >/dev/null  # bytecode of the current sources
	status=0; $(PY) bench/run.py $(BENCH) || status=$$?; $(PY) scripts/bench_table.py && exit $$status

# Deterministic: input i of a campaign is made from (SEED, i) alone; failing inputs go to out/fuzz/crashers.
SEED ?= 0
N    ?= 10000
fuzz: $(STAMP)
	$(PY) -m fuzz.run --seed $(SEED) --n $(N)

# The CDK CLI (pinned in package.json) bundles the layer with pip for Lambda's platform (cdk/bundling.py)
# and only stages the analysis image: no Docker. No notices, version check or telemetry: offline.
NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
CDK_ENV := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=$(NODE_MAJOR) CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
synth: $(STAMP) node_modules/.package-lock.json
	$(CDK_ENV) node_modules/.bin/cdk synth --quiet --no-notices

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache cdk.out .bench .demo .dicomflow-local
