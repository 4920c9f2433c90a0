# mlsteward — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen
MLSTEWARD_HOME ?= $(CURDIR)/.mlsteward
PREFECT_HOME ?= $(MLSTEWARD_HOME)/prefect
DEMO_ROWS ?= 50000
export MLSTEWARD_HOME PREFECT_HOME
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export FEAST_USAGE := False

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint bench mlflow-ui prefect-ui clean deploy worker

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: ## Create .venv from the lock file (installs uv with pip if needed)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --frozen

demo: install ## Generate the cohort, ingest it, apply Feast, train heart_disease, print a summary
	$(RUN) mlsteward generate heart_disease --rows $(DEMO_ROWS)
	$(RUN) mlsteward ingest heart_disease
	$(RUN) mlsteward materialize heart_disease
	$(RUN) mlsteward train heart_disease
	$(RUN) mlsteward status heart_disease
	$(RUN) mlsteward report heart_disease
	$(RUN) mlsteward audit verify
	@echo
	$(RUN) mlsteward where

test: install ## Run the full test suite (real Prefect, MLflow, Feast in temp dirs)
	$(RUN) pytest -q

test-fast: install ## Unit tests only
	$(RUN) pytest -q tests/unit

lint: install ## ruff check + format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

bench: install ## Benchmarks (print figures; not part of the tests)
	$(RUN) python benchmarks/training_overhead.py
	$(RUN) python benchmarks/pit_join.py
	$(RUN) python benchmarks/governance.py

mlflow-ui: ## Open the MLflow UI on http://127.0.0.1:5000 for the state in MLSTEWARD_HOME
	$(RUN) mlflow ui --backend-store-uri sqlite:///$(MLSTEWARD_HOME)/mlflow/mlflow.db \
	  --default-artifact-root file://$(MLSTEWARD_HOME)/mlflow/artifacts --host 127.0.0.1 --port 5000

prefect-ui: ## Open the Prefect UI on http://127.0.0.1:4200 (flow runs of the demo)
	$(RUN) prefect server start --host 127.0.0.1 --port 4200

clean: ## Remove all local state (MLSTEWARD_HOME) and generated data
	rm -rf $(MLSTEWARD_HOME) data/heart_disease.parquet

deploy: install ## Create the work pool and the deployments in prefect.yaml (needs PREFECT_API_URL)
	-$(RUN) prefect work-pool create mlsteward-process --type process
	MLSTEWARD_PROJECT_ROOT=$(CURDIR) $(RUN) prefect --no-prompt deploy --all

worker: ## Run a process worker for the mlsteward-process pool
	$(RUN) prefect worker start --pool mlsteward-process
