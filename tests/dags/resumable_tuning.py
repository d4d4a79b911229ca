"""A test DAG whose tuning task is killed half way and retried: trials take a few seconds each."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def slow_x(params: dict[str, Any], data: Any = None) -> float:
    time.sleep(1)
    return params["x"]


with DAG(
    dag_id="resumable_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=slow_x,
        max_evals=8,
        parallelism=2,
        seed=11,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
