"""A test DAG that tunes with an Optuna sampler on two losses, its options and directions templated."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def error_and_latency(params: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Two losses that pull apart below x = 0.3: the Pareto front is x in [0, 0.3]."""
    x = params["x"]
    return {"losses": {"error": (x - 0.3) ** 2, "latency_ms": 10 * x}}


with DAG(
    dag_id="optuna_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={
        "algo_options": Param({"n_startup_trials": 4}, type="object"),
        "directions": Param({"error": "minimize", "latency_ms": "minimize"}, type="object"),
        "experiment": Param("optuna_tuning.tune", type="string"),
    },
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=error_and_latency,
        algo="optuna.tpe",
        algo_options="{{ params.algo_options | tojson }}",
        directions="{{ params.directions | tojson }}",
        mlflow_experiment="{{ params.experiment }}",
        max_evals=8,
        parallelism=2,
        seed=5,
    )
