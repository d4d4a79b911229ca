"""Deployment test DAG: a tuning task that logs to an MLflow tracking server, for its extra link."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def x_loss(params: dict[str, Any], data: Any = None) -> float:
    return params["x"]


with DAG(
    dag_id="deploy_extra_link",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=["sparktune-deployment-test"],
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=x_loss,
        max_evals=2,
        parallelism=1,
        mlflow_conn_id="deploy_mlflow_server",
    )
