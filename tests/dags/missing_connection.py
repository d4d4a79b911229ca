"""Test DAGs that name connections Airflow does not have: a typo must fail the task, not deploy it.

``spark_defualt`` is not ``spark_default``: the task fails naming it, before Spark or MLflow is
touched, instead of running Spark ``local[*]`` on the worker.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from airflow_provider_sparktune.sensors.staged_data import StagedDataSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def x_loss(params: dict[str, Any], data: Any = None) -> float:
    return float(params["x"])


with DAG(dag_id="missing_spark_connection", schedule=None, start_date=START) as missing_spark:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=x_loss,
        max_evals=2,
        parallelism=1,
        spark_conn_id="spark_defualt",  # a typo: no such connection
    )

with DAG(
    dag_id="missing_data_connection",
    schedule=None,
    start_date=START,
    params={"uri": Param("/nonexistent", type="string")},
) as missing_data:
    StagedDataSensor(
        task_id="wait_for_data",
        uri="{{ params.uri }}",
        data_conn_id="fsspec_defualt",  # a typo: no such connection
        poke_interval=0.2,
        timeout=30,
    )
