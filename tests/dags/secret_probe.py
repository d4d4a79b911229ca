"""A test DAG that reads its data from a server that needs credentials, in reload mode.

Every trial re-reads the dataset on an executor, so the fsspec connection's login, password and
storage options must travel there; the Spark session is the task's own, built from the connection.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def distance_to_mean_y(params: dict[str, Any], data: Any = None) -> float:
    return float((params["x"] - data.value["y"].mean()) ** 2)


with DAG(
    dag_id="secret_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"data": Param("", type="string")},
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=distance_to_mean_y,
        data="{{ params.data }}",
        broadcast_threshold_bytes=1,  # reload: the executors read the data themselves
        max_evals=2,
        parallelism=2,
        seed=5,
    )
