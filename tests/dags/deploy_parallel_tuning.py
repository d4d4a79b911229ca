"""Deployment test DAG: two tuning tasks side by side on the embedded MLflow store (no connection)."""

from __future__ import annotations

import time
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def quick_x(params: dict[str, Any], data: Any = None) -> float:
    time.sleep(0.2)
    return params["x"]


with DAG(
    dag_id="deploy_parallel_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=["sparktune-deployment-test"],
) as dag:
    for name in ("tune_a", "tune_b"):
        HyperoptSparkOperator(
            task_id=name,
            search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
            objective=quick_x,
            max_evals=4,
            parallelism=2,
            mlflow_conn_id="deploy_embedded_store",  # never defined: the embedded SQLite store
        )
