"""A test DAG whose trials record where they ran, to prove they ran on the cluster's executors."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator


def where_am_i(params: dict[str, Any], data: Any = None, marker_dir: str = "") -> float:
    """Writes the trial's working directory (a standalone executor's is under the worker's work dir)."""
    Path(marker_dir, f"{uuid.uuid4().hex}.txt").write_text(os.getcwd())
    return params["x"]


with DAG(
    dag_id="cluster_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"marker_dir": Param("/tmp", type="string")},
) as dag:
    HyperoptSparkOperator(
        task_id="tune",
        search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
        objective=where_am_i,
        objective_kwargs={"marker_dir": "{{ params.marker_dir }}"},
        max_evals=3,
        parallelism=2,
        seed=1,
    )
