"""Deployment test DAG: trials that outlast the test, so the task is marked failed while they run."""

from __future__ import annotations

import time
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def ten_minutes(params: dict[str, Any], data: Any = None) -> float:
    time.sleep(600)
    return params["x"]


with DAG(
    dag_id="deploy_mark_failed",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=["sparktune-deployment-test"],
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=ten_minutes,
        max_evals=6,
        parallelism=2,
        spark_conn_id="deploy_spark_cluster",
        mlflow_conn_id="deploy_mark_failed_mlflow",
    )
