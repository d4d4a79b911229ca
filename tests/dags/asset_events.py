"""Test DAGs for the tuning asset: one emits every successful night, one only on improving nights."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.assets import tuning_asset
from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def shifted_x(params: dict[str, Any], data: Any = None, offset: float = 0.0) -> float:
    return params["x"] + offset


def tuning_dag(dag_id: str, emit_if_not_improved: bool) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={
            "offset": Param(0.0, type="number"),
            "experiment": Param(f"{dag_id}.tune", type="string"),
            "fail": Param(False, type="boolean"),
        },
    ) as dag:
        HyperoptSparkOperator(
            task_id="tune",
            search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
            objective=shifted_x,
            objective_kwargs="{{ {'offset': params.offset} | tojson }}",
            max_evals="{{ 0 if params.fail else 3 }}",  # 0 fails the task before any trial
            parallelism=1,
            seed=3,
            mlflow_experiment="{{ params.experiment }}",
            outlets=[tuning_asset(f"{dag_id}.tune")],
            emit_if_not_improved=emit_if_not_improved,
        )
    return dag


every_night = tuning_dag("asset_every_night", emit_if_not_improved=True)
improving_nights = tuning_dag("asset_improving_nights", emit_if_not_improved=False)
