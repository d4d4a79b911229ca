"""A test DAG whose tuning task is mapped over Spark confs a run conf chose, through XCom.

The mapped values reach the operator's ``__init__`` already resolved, as if the DAG file had
written them: they must still be checked as templated (issue 32).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator

SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}}


def x_loss(params: dict[str, Any], data: Any = None) -> float:
    return float(params["x"])


@task
def confs_from_run_conf(**context: Any) -> list[dict[str, Any]]:
    """What a run conf chose, passed on through XCom as a mapping would be."""
    return list(context["params"]["spark_confs"])


with DAG(
    dag_id="mapped_conf_tuning",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"spark_confs": Param([{}], type="array")},
) as mapped_conf_tuning:
    HyperoptSparkOperator.partial(
        task_id="tune", search_space=SPACE, objective=x_loss, max_evals=2, parallelism=1, seed=3
    ).expand(spark_conf=confs_from_run_conf())
