"""Test DAGs that run the operator through real Airflow DAG runs instead of a hand-made context."""

from __future__ import annotations

import os
import time
from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from airflow_provider_sparktune.search.names import SEARCHERS


def shifted_x(params: dict[str, Any], data: Any = None, offset: float = 0.0) -> float:
    return params["x"] + offset


def one_second_x(
    params: dict[str, Any], data: Any = None, marks: str = "", gate: str = "", hold_after: int = 0
) -> float:
    """Sleeps a second and appends the trial's wall-clock start and end to ``marks``.

    Once ``hold_after`` trials have finished, later trials wait (up to two minutes) for the file
    ``gate``: the test creates it when MLflow is down, so trials are still to run during the outage
    however slowly the machine wrote the first ones.
    """
    deadline = time.monotonic() + 120
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        with open(marks, "a+") as seen:
            seen.seek(0)
            if len(seen.read().splitlines()) < hold_after:
                break
        time.sleep(0.1)
    started = time.time()
    time.sleep(1)
    with open(marks, "a") as out:
        out.write(f"{started} {time.time()}\n")
    return params["x"]


def nightly_warm_start_dag(dag_id: str, algo: str) -> DAG:
    """A daily tuning DAG that warm starts from its earlier nights, searching with ``algo``."""
    with DAG(
        dag_id=dag_id,
        schedule="@daily",
        catchup=False,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={
            "space": Param({"x": {"hp": "uniform", "low": 0, "high": 1}}, type="object"),
            "offset": Param(0.0, type="number"),
            "experiment": Param(f"{dag_id}.tune", type="string"),
        },
    ) as dag:
        HyperoptSparkOperator(
            task_id="tune",
            search_space="{{ params.space | tojson }}",
            objective=shifted_x,
            objective_kwargs="{{ {'offset': params.offset} | tojson }}",
            max_evals=5,
            parallelism=1,
            seed="{{ logical_date.day }}",
            algo=algo,
            warm_start_k=2,
            mlflow_experiment="{{ params.experiment }}",
        )
    return dag


# One per searcher but atpe (lightgbm is not in the test install); hyperopt's default keeps the plain id.
NIGHTLY_WARM_START_DAGS = {
    algo: nightly_warm_start_dag(
        "nightly_warm_start" if algo == "tpe" else f"nightly_warm_start_{algo.replace('.', '_')}", algo
    )
    for algo in SEARCHERS
    if algo != "atpe"
}

with DAG(
    dag_id="mlflow_outage",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"experiment": Param("mlflow_outage.tune", type="string"), "outage": Param({}, type="object")},
) as mlflow_outage:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=one_second_x,
        objective_kwargs="{{ params.outage | tojson }}",
        max_evals=12,
        parallelism=2,
        seed=2,
        mlflow_experiment="{{ params.experiment }}",
    )

with DAG(
    dag_id="mlflow_never_returns",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={
        "experiment": Param("mlflow_never_returns.tune", type="string"),
        "outage": Param({}, type="object"),
    },
) as mlflow_never_returns:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=one_second_x,
        objective_kwargs="{{ params.outage | tojson }}",
        max_evals=4,
        parallelism=2,
        seed=3,
        mlflow_experiment="{{ params.experiment }}",
        mlflow_retry_timeout=3,
    )
