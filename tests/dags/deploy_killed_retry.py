"""Deployment test DAG: a tuning task killed with SIGKILL half way; the scheduler's retry resumes it."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def three_seconds_x(params: dict[str, Any], data: Any = None) -> float:
    time.sleep(3)
    return params["x"]


with DAG(
    dag_id="deploy_killed_retry",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=["sparktune-deployment-test"],
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=three_seconds_x,
        max_evals=8,
        parallelism=2,
        seed=11,
        mlflow_conn_id="deploy_killed_retry_mlflow",
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
