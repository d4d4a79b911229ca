# Quick start: `make demo` runs the example DAG on embedded defaults, `make demo-nightly` the nightly
# re-tuning loop (sensor, built-in estimator objective, final model, registry gate, the consumer DAGs
# reading the asset events), `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/example_dags
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__UNIT_TEST_MODE ?= False
export PYSPARK_PYTHON ?= $(CURDIR)/$(BIN)/python
export MLFLOW_TRACKING_URI ?= sqlite:///$(AIRFLOW_HOME)/mlflow.db

.PHONY: install demo demo-nightly airflow test test-unit test-integration test-matrix lint docs bench mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	# optuna.gp's torch, pinned and by pip: the CPU build of 2.13.0 where the machine has it (an
	# unpinned torch resolves to a CUDA build of several GB); the extras then find it installed
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,sklearn,openlineage,plot,optuna-gp]'
	@java -version >/dev/null 2>&1 || { echo "Java 17+ is required by Spark: install a JDK (e.g. openjdk-17-jre-headless)"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

$(AIRFLOW_HOME)/airflow.db: $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate >/dev/null

demo: $(AIRFLOW_HOME)/airflow.db
	$(BIN)/airflow dags test example_hyperopt_spark
	@$(BIN)/python -m airflow_provider_sparktune.tracking.summary --tracking-uri "$(MLFLOW_TRACKING_URI)" --experiment example_hyperopt_spark.tune

demo-nightly: $(AIRFLOW_HOME)/airflow.db
	$(BIN)/airflow dags test example_nightly_retune
	$(BIN)/airflow dags test example_nightly_report
	$(BIN)/airflow dags test example_nightly_serving
	@$(BIN)/python -m airflow_provider_sparktune.tracking.summary --tracking-uri "$(MLFLOW_TRACKING_URI)" --experiment example_nightly_retune.tune

# The real thing without Docker: api-server, scheduler, dag-processor and triggerer (airflow standalone,
# LocalExecutor) on this project's AIRFLOW_HOME, plus an MLflow server on the embedded store so that
# the "MLflow run" link opens. Both listen on 127.0.0.1 only; Ctrl-C stops both.
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000
airflow: $(AIRFLOW_HOME)/airflow.db
	@$(BIN)/python -m airflow_provider_sparktune.tracking.store "$(MLFLOW_TRACKING_URI)"
	@MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid $(BIN)/mlflow server --backend-store-uri "$(MLFLOW_TRACKING_URI)" \
		--artifacts-destination "$(AIRFLOW_HOME)/mlartifacts" --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
		> "$(AIRFLOW_HOME)/mlflow-server.log" 2>&1 & mlflow_pid=$$!; \
	trap 'kill -- -$$mlflow_pid 2>/dev/null' EXIT INT TERM; \
	echo "Airflow UI: http://127.0.0.1:$(AIRFLOW_PORT)  (no login: every user is admin on this local instance)"; \
	echo "MLflow UI:  http://127.0.0.1:$(MLFLOW_PORT)   (log: $(AIRFLOW_HOME)/mlflow-server.log)"; \
	AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "mlflow", "host": "http://127.0.0.1:$(MLFLOW_PORT)"}' \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True PATH="$(CURDIR)/$(BIN):$$PATH" \
	$(BIN)/airflow standalone

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -m unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests -m integration

bench: $(STAMP)
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,sklearn,bench,optuna-gp]'
	$(BIN)/python benchmarks/bench_dispatch.py
	$(BIN)/python benchmarks/search_quality.py
	$(BIN)/python benchmarks/pruning.py
	$(BIN)/python benchmarks/cold_start.py
	$(BIN)/python benchmarks/staging_scale.py
	$(BIN)/python benchmarks/trials_scale.py

# Mutation testing of the pure-logic modules (see [tool.mutmut] in pyproject.toml). Narrow it with
# MUTANTS, a mutant-name glob: make mutate MUTANTS='airflow_provider_sparktune.tuning.space*'
MUTANTS ?=
mutate: $(STAMP)
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,sklearn,mutate]'
	$(BIN)/mutmut run --max-children $$(nproc) $(MUTANTS)
	$(BIN)/mutmut results

# The suite's Spark core, the resident dispatcher with this provider's daemon and one Spark Connect run,
# against the oldest and the newest supported pyspark, each in a virtualenv of its own under
# .matrix/<pyspark version> (made once, refreshed when pyproject.toml changes). MATRIX lists
# pyspark:pyspark-client pairs: make test-matrix MATRIX=4.1.4:4.1.3
MATRIX ?= 4.0.0:4.0.0 4.2.1:4.2.0
MATRIX_TESTS ?= tests/data/test_staging.py tests/tuning/test_run.py tests/tuning/test_resident.py \
	tests/tuning/test_daemon.py tests/tuning/test_launch.py::test_trials_run_on_the_connect_servers_executors \
	tests/test_spark_version.py
test-matrix: $(STAMP)
	@failed=""; for pair in $(MATRIX); do \
		spark=$${pair%%:*}; client=$${pair##*:}; env=.matrix/$$spark; \
		if [ ! -x $$env/bin/python ] || [ pyproject.toml -nt $$env/.installed ]; then \
			$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $$env && \
			$(BIN)/uv pip install --python $$env/bin/python --quiet -e '.[dev,sklearn,plot]' \
				"pyspark==$$spark" "pyspark-client==$$client" && touch $$env/.installed || exit 1; \
		fi; \
		echo "== pyspark $$spark, pyspark-client $$client ($$env)"; \
		start=$$(date +%s); \
		PYSPARK_PYTHON=$(CURDIR)/$$env/bin/python $$env/bin/python -m pytest -p no:cacheprovider $(MATRIX_TESTS) \
			|| failed="$$failed $$spark"; \
		echo "== pyspark $$spark: $$(( $$(date +%s) - start )) s"; \
	done; \
	if [ -n "$$failed" ]; then echo "== test-matrix failed on pyspark$$failed"; exit 1; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation site (docs/, Sphinx + MyST) into docs/_build/html. Strict: every warning is an error
# (-W), every cross-reference must resolve (-n), and a fresh environment (-E) re-reads every page so a
# warning never hides behind an earlier build. A broken link, a page outside the toctree, an example
# marker gone from example_dags/ or an operator argument without a docstring entry fails it.
docs: $(STAMP)
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,sklearn,openlineage,plot,docs]'
	$(BIN)/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html
	@echo "docs: file://$(CURDIR)/docs/_build/html/index.html"

clean:
	rm -rf docs/_build $(AIRFLOW_HOME) .pytest_cache .mypy_cache .ruff_cache mutants

# Only the deployment tests (part of `make test` too): api-server, scheduler, dag-processor and
# triggerer as separate processes on a Postgres metadata DB, scenarios through the REST API.
.PHONY: test-deployment
test-deployment: $(STAMP)
	$(BIN)/python -m pytest tests -m deployment
