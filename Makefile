# Everything runs from .venv in the repo; `make` alone lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: help install test lint typecheck unit demo bench reliability clean test-trino trino-up trino-down

help:
	@echo "make demo   run the whole job on generated sample logs against a local CloudWatch, chart the result"
	@echo "make test   ruff, mypy and pytest"
	@echo "make test-trino  the engine-conformance tests on a real Trino (needs Java 24+; downloads Trino once)"
	@echo "make trino-up / trino-down  start / stop a local Trino for --engine trino (its URL on the last line)"
	@echo "make bench  the benchmark behind docs/BENCHMARKS.md"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: template-check lint typecheck unit

# Trino's tier: the tests start and stop their own server (downloaded once into ~/.cache/cfmetrics/trino).
test-trino: $(STAMP)
	$(BIN)/pytest -m trino tests/trino

trino-up: $(STAMP)
	@$(BIN)/python -m tests.trino_server up

trino-down: $(STAMP)
	@$(BIN)/python -m tests.trino_server down

demo: $(STAMP)
	$(BIN)/cfmetrics demo

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.publish
	$(BIN)/python -m bench.schedule
	$(BIN)/python -m bench.concurrency --write-docs

# The long run behind docs/RELIABILITY.md: 1,000 random scenarios with faults, and SIGKILL at every kill point.
reliability: $(STAMP)
	$(BIN)/python -m tests.reliability

clean:
	rm -rf $(VENV) .venv-sam .aws-sam demo-output .cfmetrics-state .pytest_cache .mypy_cache .ruff_cache

# --- AWS deployment (template.yml) ------------------------------------------------------------------------
# aws-sam-cli pins its own boto3/botocore, which clash with the project's, so it lives in a venv of its own.
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed-stamp

.PHONY: template-check build-CfMetricsFunction build-LegacyMoverFunction

$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet 'aws-sam-cli>=1.120'
	@touch $@

# Offline: cfn-lint, then SAM's own validation with its linter (no AWS account or credentials needed).
template-check: $(STAMP) $(SAM_STAMP)
	$(BIN)/cfn-lint template.yml
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --region us-east-1 -t template.yml

# `sam build` runs these (Metadata: BuildMethod: makefile) with ARTIFACTS_DIR set. lambda_build/artifact.py ships
# the job modules each handler reaches (no demo, test or CLI code), sql/ for the metrics function, and vendors the
# pure-Python packages the AWSSDKPandas layer lacks (lambda_build/requirements.txt); boto3 comes from the runtime.
build-CfMetricsFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: run this through sam build"; exit 1; }
	$(PYTHON) lambda_build/artifact.py job.handler "$(ARTIFACTS_DIR)" --sql --vendor lambda_build/requirements.txt

build-LegacyMoverFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: run this through sam build"; exit 1; }
	$(PYTHON) lambda_build/artifact.py job.legacy_mover "$(ARTIFACTS_DIR)"
