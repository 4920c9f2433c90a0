# mlsteward — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen
MLSTEWARD_HOME ?= $(CURDIR)/.mlsteward
PREFECT_HOME ?= $(MLSTEWARD_HOME)/prefect
DEMO_ROWS ?= 50000
DEMO_BATCH_ROWS ?= 5000
DEMO_DIR ?= $(MLSTEWARD_HOME)/demo
DEMO_SERVING_PORT ?= 8801
# The two other built-in models: a smaller cohort and a shorter search keep the demo short.
DEMO_OTHER_ROWS ?= 12000
DEMO_OTHER_TRIALS ?= 5
export MLSTEWARD_HOME PREFECT_HOME
# PROFILE=production: every command runs on the production profile (config/profiles/).
ifdef PROFILE
export MLSTEWARD_PROFILE := $(PROFILE)
endif
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export FEAST_USAGE := False

.DEFAULT_GOAL := help
.PHONY: help install demo test test-platform test-faults test-fast lint docs bench mlflow-ui prefect-ui clean deploy worker \
  up down status

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile
# the whole stack again at import (measured: 35 s instead of 18 s for prefect+mlflow+feast+evidently).
install: ## Create .venv from the lock file (installs uv with pip if needed)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --frozen --compile-bytecode

demo: install ## The whole loop: train, score, drift, retrain, promote or reject, reproduce, serve
	@echo "== 1/10  data: the built-in cohort (Jan 2024 - Jun 2025), contract-checked, snapshotted"
	$(RUN) mlsteward generate heart_disease --rows $(DEMO_ROWS)
	$(RUN) mlsteward ingest heart_disease
	$(RUN) mlsteward materialize heart_disease
	@echo; echo "== 2/10  train: Hyperopt-tuned XGBoost, validation gates, the first champion"
	$(RUN) mlsteward train heart_disease
	@echo; echo "== 3/10  July: new patients from the same population arrive; score them, check drift"
	$(RUN) mlsteward generate heart_disease --start 2025-07-01 --days 31 --rows $(DEMO_BATCH_ROWS) \
	  --seed 101 --id-offset 1000000000 --out $(DEMO_DIR)/2025-07.parquet --append-to-source
	$(RUN) mlsteward score heart_disease --source $(DEMO_DIR)/2025-07.parquet
	$(RUN) mlsteward drift heart_disease
	@echo; echo "== 4/10  August: BMI and cholesterol read 1.5 SD higher (a new assay); score it"
	$(RUN) mlsteward generate heart_disease --start 2025-08-01 --days 31 --rows $(DEMO_BATCH_ROWS) \
	  --seed 102 --id-offset 1001000000 --shift bmi=1.5 --shift cholesterol=1.5 \
	  --out $(DEMO_DIR)/2025-08.parquet --append-to-source
	$(RUN) mlsteward score heart_disease --source $(DEMO_DIR)/2025-08.parquet
	@echo; echo "== 5/10  outcomes of both months come in: joined to the prediction log, and the"
	@echo "        source table (now with both months) is snapshotted again for retraining"
	$(RUN) mlsteward labels heart_disease $(DEMO_DIR)/2025-07.parquet
	$(RUN) mlsteward labels heart_disease $(DEMO_DIR)/2025-08.parquet
	$(RUN) mlsteward ingest heart_disease
	@echo; echo "== 6/10  the daily drift check: Evidently on the last 7 days of predictions;"
	@echo "        drift on a key feature retrains, and the challenger faces the same gates"
	$(RUN) mlsteward drift heart_disease
	@echo; echo "== 7/10  reproduce the champion from its lineage alone: its own snapshot through Feast"
	@echo "        (the source has grown since), recorded params and seed -> the same model bytes"
	$(RUN) mlsteward reproduce heart_disease
	@echo; echo "== 8/10  serve: the champion answers online (features from the Feast online store) with"
	@echo "        its reasons; stopping the service (SIGTERM) writes every answer to the prediction log"
	@echo "        (the service asks for a token: the demo's own service account, a viewer, gets one)"
	@mkdir -p $(DEMO_DIR)
	@$(RUN) mlsteward users add demo --service --role viewer --replace > /dev/null
	@token=$$($(RUN) mlsteward tokens create service:demo --days 1 --description "make demo" \
	  --json | $(PYTHON) -c "import json, sys; print(json.load(sys.stdin)['token'])") || exit 1; \
	.venv/bin/python -m mlsteward.serving --port $(DEMO_SERVING_PORT) --model heart_disease \
	  > $(DEMO_DIR)/serving.log 2>&1 & pid=$$!; ok=0; \
	for i in $$(seq 240); do \
	  if $(PYTHON) -c "import urllib.request as u; \
	    u.urlopen('http://127.0.0.1:$(DEMO_SERVING_PORT)/readyz', timeout=1)" 2>/dev/null; \
	  then ok=1; break; fi; kill -0 $$pid 2>/dev/null || break; sleep 0.5; \
	done; \
	if [ $$ok = 1 ]; then \
	  MLSTEWARD_SERVING_TOKEN=$$token $(RUN) mlsteward predict heart_disease -e 1 -e 2 -e 3 \
	    --explain --url http://127.0.0.1:$(DEMO_SERVING_PORT); rc=$$?; \
	else echo "the prediction service did not start:"; tail -20 $(DEMO_DIR)/serving.log; rc=1; fi; \
	kill -TERM $$pid 2>/dev/null; wait $$pid; exit $$rc
	@echo; echo "== 9/10  the other built-in models, each from its own config: diabetes (onset within a"
	@echo "        year; ethnicity measured for fairness, never a model input) and readmission"
	@echo "        (regression: days in hospital at the next admission, count:poisson)"
	@for m in diabetes readmission; do \
	  $(RUN) mlsteward generate $$m --rows $(DEMO_OTHER_ROWS) && \
	  $(RUN) mlsteward ingest $$m && \
	  $(RUN) mlsteward train $$m --max-evals $(DEMO_OTHER_TRIALS) || exit 1; \
	done
	@echo
	$(RUN) mlsteward models
	$(RUN) mlsteward status heart_disease
	$(RUN) mlsteward report heart_disease
	$(RUN) mlsteward report readmission
	$(RUN) mlsteward audit verify
	@echo; echo "== 10/10 the process and the evidence: the delivery process measured (control charts,"
	@echo "        special causes, Cpk against the targets), and the champion's evidence pack for an"
	@echo "        EU AI Act audit, checked offline from the zip alone"
	$(RUN) mlsteward process report
	$(RUN) mlsteward evidence heart_disease champion --out $(DEMO_DIR)/evidence
	@$(RUN) mlsteward evidence verify "$$(ls -t $(DEMO_DIR)/evidence/*.zip | head -1)"
	@echo
	$(RUN) mlsteward where

# One pytest worker per core; a worker takes whole files (module fixtures train once per file)
# and has its own Prefect test server, MLflow store and ports.
# One xdist worker more than cores: a fifth of a worker's time goes to waiting on the servers
# and subprocesses it starts, and with one XGBoost thread per worker (tests/conftest.py) the
# extra worker fills that (measured on 2 cores: 3 workers 8:39, 2 workers 9:53).
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(len(os.sched_getaffinity(0)) + 1)")
# Files go out in collection order, end-to-end first: xdist's default hands out the files with
# the most tests first, which left the one-test platform files (2-5 minutes each) for last.

test: install ## Run the suite (real Prefect, MLflow, Feast in temp dirs), all but the platform boots and clusters
	$(RUN) pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	  -m "not platform and not cluster and (not faults or fault_subset)"

# The three tests that boot the whole platform with `make up` (local and production profiles,
# a run from the Prefect UI): 3-4 minutes each, a third of the suite's CPU; and the tests that
# start Ray and Dask clusters (a Ray search alone took 81 s beside the rest of the suite, its
# workers competing for the two cores). CI runs them too.
test-platform: install ## `make up`/`make down` for real (both profiles, the Prefect UI) and the Ray/Dask clusters
	$(RUN) pytest -q -n 3 --dist loadfile -m "platform or cluster"

# Servers, disks and processes broken on purpose (tests/faults/); each test records what happened
# under build/fault-results, which `make reliability` turns into docs/reliability.md. CI runs the
# ones `make test` has not run already (FAULT_SELECT="faults and not fault_subset").
FAULT_SELECT ?= faults
test-faults: install ## The fault-injection, fuzzing and soak suite (tests/faults/), with its figures
	$(RUN) pytest -q -n 2 --dist loadfile -m "$(FAULT_SELECT)"

test-fast: install ## Unit tests only (pytest -m unit)
	$(RUN) pytest -q -n auto -m unit

# The same checks as .pre-commit-config.yaml and CI: style, types of the core, import layers.
lint: install ## ruff, ruff format, mypy on the core, import layers (lint-imports)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

docs: install ## Regenerate docs/reference (config keys, CLI) from the code
	$(RUN) python docs/generate_reference.py

bench: install ## Benchmarks (print figures; not part of the tests)
	$(RUN) python benchmarks/training_overhead.py
	$(RUN) python benchmarks/pit_join.py
	$(RUN) python benchmarks/governance.py
	$(RUN) python benchmarks/drift.py
	$(RUN) python benchmarks/reproduce.py
	$(RUN) python benchmarks/serving.py
	$(RUN) python benchmarks/scale.py
	$(RUN) python benchmarks/distributed_training.py
	$(RUN) python benchmarks/signing.py
	$(RUN) python benchmarks/process_report.py

up: install ## Start the platform; the first start shows an admin token and a webhook secret (PROFILE=production: on PostgreSQL, Redis, an artifact store)
	@$(RUN) python -m mlsteward.platform up

down: ## Stop the processes `make up` started (worker first, then the servers)
	@$(RUN) python -m mlsteward.platform down

status: ## Show which platform services run, with pids and URLs
	@$(RUN) python -m mlsteward.platform status

mlflow-ui: ## Open the MLflow UI on http://127.0.0.1:5000 for the state in MLSTEWARD_HOME
	$(RUN) mlflow ui --backend-store-uri sqlite:///$(MLSTEWARD_HOME)/mlflow/mlflow.db \
	  --default-artifact-root file://$(MLSTEWARD_HOME)/mlflow/artifacts --host 127.0.0.1 --port 5000

prefect-ui: ## Open the Prefect UI on http://127.0.0.1:4200 (flow runs of the demo)
	$(RUN) prefect server start --host 127.0.0.1 --port 4200

clean: ## Remove all local state (MLSTEWARD_HOME) and generated data
	rm -rf $(MLSTEWARD_HOME) data/heart_disease.parquet data/diabetes.parquet data/readmission.parquet

# prefect.yaml is written from config/models first, so a new model's YAML is all it takes.
deploy: install ## Write prefect.yaml from config/models, create the work pool, its deployments and the alert automations (needs PREFECT_API_URL)
	MLSTEWARD_PROJECT_ROOT=$(CURDIR) $(RUN) mlsteward deployments render
	-$(RUN) prefect work-pool create mlsteward-process --type process
	MLSTEWARD_PROJECT_ROOT=$(CURDIR) $(RUN) prefect --no-prompt deploy --all
	$(RUN) mlsteward alerts sync

worker: ## Run a process worker for the mlsteward-process pool
	$(RUN) prefect worker start --pool mlsteward-process
