"""A test DAG with one tuning task per searcher beyond hyperopt's default: each runs through the operator."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from airflow_provider_sparktune.search.names import OPTUNA_SAMPLERS

SEARCHERS = ("rand", "anneal", *OPTUNA_SAMPLERS)


def bowl(params: dict[str, Any], data: Any = None) -> float:
    """One minimum at x = 0.3, y = 2."""
    return (params["x"] - 0.3) ** 2 + (params["y"] - 2) ** 2


with DAG(
    dag_id="every_searcher_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"experiment": Param("every_searcher_tuning", type="string")},
) as dag:
    for algo in SEARCHERS:
        HyperoptSparkOperator(
            task_id=f"tune_{algo.replace('.', '_')}",
            search_space={
                "x": {"hp": "uniform", "low": 0, "high": 1},
                "y": {"hp": "randint", "low": 0, "high": 5},
            },
            objective=bowl,
            algo=algo,
            mlflow_experiment="{{ params.experiment }}",
            max_evals=6,
            parallelism=2,
            seed=7,
        )
