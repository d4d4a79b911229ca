# Quick start: `make demo` runs the example DAG on embedded defaults, `make demo-nightly` the nightly
# re-tuning example (sensor, built-in estimator objective, final model), `make test` runs the suite.
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

.PHONY: install demo demo-nightly test test-unit test-integration lint bench mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,sklearn]'
	@java -version >/dev/null 2>&1 || { echo "Java 17+ is required by Spark: install a JDK (e.g. openjdk-17-jre-headless)"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

$(AIRFLOW_HOME)/airflow.db: $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate >/dev/null

demo: $(AIRFLOW_HOME)/airflow.db
	$(BIN)/airflow dags test example_hyperopt_spark
	@$(BIN)/python -m airflow_provider_sparktune.summary --tracking-uri "$(MLFLOW_TRACKING_URI)" --experiment example_hyperopt_spark.tune

demo-nightly: $(AIRFLOW_HOME)/airflow.db
	$(BIN)/airflow dags test example_nightly_retune
	@$(BIN)/python -m airflow_provider_sparktune.summary --tracking-uri "$(MLFLOW_TRACKING_URI)" --experiment example_nightly_retune.tune

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -m unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests -m integration

bench: $(STAMP)
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,sklearn,bench]'
	$(BIN)/python benchmarks/bench_dispatch.py

# Mutation testing of the pure-logic modules (see [tool.mutmut] in pyproject.toml). Narrow it with
# MUTANTS, a mutant-name glob: make mutate MUTANTS='airflow_provider_sparktune.space*'
MUTANTS ?=
mutate: $(STAMP)
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,sklearn,mutate]'
	$(BIN)/mutmut run --max-children $$(nproc) $(MUTANTS)
	$(BIN)/mutmut results

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(AIRFLOW_HOME) .pytest_cache .mypy_cache .ruff_cache mutants
