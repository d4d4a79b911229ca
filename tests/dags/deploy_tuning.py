"""Deployment test DAGs: one tuning DAG per scenario, on the x-in-[0, 1] space (loss = x).

- ``deploy_parallel_tuning``: two tuning tasks side by side on the embedded MLflow store.
- ``deploy_mark_failed``: trials that outlast the test, so the task is marked failed while they run.
- ``deploy_killed_retry``: 3 s trials; the task is SIGKILLed half way and the scheduler's retry resumes.
- ``deploy_extra_link``: logs to an MLflow tracking server, for the "MLflow run" link.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator

SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}}


def x_loss(params: dict[str, Any], data: Any = None) -> float:
    return params["x"]


def quick_x(params: dict[str, Any], data: Any = None) -> float:
    time.sleep(0.2)
    return params["x"]


def three_seconds_x(params: dict[str, Any], data: Any = None) -> float:
    time.sleep(3)
    return params["x"]


def ten_minutes_x(params: dict[str, Any], data: Any = None, started_dir: str = "") -> float:
    """Says it started (a file in ``started_dir``), then outlasts the test."""
    import os
    from pathlib import Path

    if started_dir:
        (Path(started_dir) / f"trial-{os.getpid()}-{params['x']}").touch()
    time.sleep(600)
    return params["x"]


def tuning_dag(dag_id: str, task_ids: tuple[str, ...] = ("tune",), **operator_args: Any) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        tags=["sparktune-deployment-test"],
    ) as dag:
        for task_id in task_ids:
            HyperoptSparkOperator(task_id=task_id, search_space=SPACE, **operator_args)
    return dag


parallel_tuning = tuning_dag(
    "deploy_parallel_tuning",
    ("tune_a", "tune_b"),
    objective=quick_x,
    max_evals=4,
    parallelism=2,
    mlflow_conn_id="mlflow_default",  # not set in the deployment: the embedded SQLite store
)
mark_failed = tuning_dag(
    "deploy_mark_failed",
    objective=ten_minutes_x,
    objective_kwargs={"started_dir": "{{ dag_run.conf.get('started_dir', '') }}"},
    max_evals=6,
    parallelism=2,
    spark_conn_id="deploy_spark_cluster",
    mlflow_conn_id="deploy_mark_failed_mlflow",
)
killed_retry = tuning_dag(
    "deploy_killed_retry",
    objective=three_seconds_x,
    max_evals=8,
    parallelism=2,
    seed=11,
    mlflow_conn_id="deploy_killed_retry_mlflow",
    retries=1,
    retry_delay=timedelta(seconds=1),
)
extra_link = tuning_dag(
    "deploy_extra_link",
    objective=x_loss,
    max_evals=2,
    parallelism=1,
    mlflow_conn_id="deploy_mlflow_server",
)
