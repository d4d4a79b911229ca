"""A test DAG whose trials sleep far longer than the task's execution_timeout."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator

# Long enough that trials are running when it fires, also when a loaded machine takes 20 s to start
# the task and its MLflow run; the trials sleep far longer.
EXECUTION_TIMEOUT_S = 40


def sleeps_for_ten_minutes(params: dict[str, Any], data: Any = None) -> float:
    time.sleep(600)
    return params["x"]


with DAG(
    dag_id="timeout_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=sleeps_for_ten_minutes,
        max_evals=4,
        parallelism=2,
        execution_timeout=timedelta(seconds=EXECUTION_TIMEOUT_S),
    )
