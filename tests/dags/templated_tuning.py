"""A test DAG whose search space, budget and Spark conf come from run conf through templates."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def shifted_x(params: dict[str, Any], data: Any = None, offset: float = 0.0) -> float:
    return params["x"] + offset


with DAG(
    dag_id="templated_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={
        "space": Param({"x": {"hp": "uniform", "low": 0, "high": 1}}, type="object"),
        "max_evals": Param(3, type="integer"),
        "spark_conf": Param({}, type="object"),
    },
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space="{{ params.space | tojson }}",
        objective=shifted_x,
        objective_kwargs={"offset": 2.0},
        max_evals="{{ params.max_evals }}",
        parallelism=2,
        seed=4,
        spark_conf="{{ params.spark_conf | tojson }}",  # run conf may tune resources, never load code
    )
