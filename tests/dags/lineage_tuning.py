"""Test DAG for OpenLineage: a sensor waits for a Parquet dataset, the operator tunes on its plan."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.assets import tuning_asset
from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from airflow_provider_sparktune.sensors.staged_data import StagedDataSensor


def mean_offset(params: dict[str, Any], data: Any = None) -> float:
    return abs(float(data.value["y"].mean()) - params["x"])


with DAG(
    dag_id="lineage_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"uri": Param("/nonexistent", type="string")},
) as dag:
    wait = StagedDataSensor(task_id="wait_for_data", uri="{{ params.uri }}", poke_interval=0.5, timeout=60)
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=mean_offset,
        data=wait.output,
        max_evals=3,
        parallelism=1,
        seed=1,
        outlets=[tuning_asset("lineage_tuning.tune")],
    )
