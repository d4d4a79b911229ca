"""Deployment test DAGs: StagedDataSensor waits (deferred in the triggerer, or rescheduled by the
scheduler) for data written after it started, then a tuning task trains on the plan it returned.

Poke intervals are realistic on purpose: a reschedule-mode sensor that pokes every few seconds under
LocalExecutor can be failed by the executor's late success report for its previous poke
(apache/airflow#71172).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from airflow_provider_sparktune.sensors.staged_data import StagedDataSensor


def rows_seen(params: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """The loss is the parameter; the metric proves the trial read the staged data."""
    return {"loss": params["x"], "status": "ok", "metrics": {"rows": float(len(data.value))}}


VARIANTS = {
    "deploy_sensor_deferrable": {"deferrable": True, "poke_interval": 15},
    "deploy_sensor_reschedule": {"mode": "reschedule", "poke_interval": 20},
}

for dag_id, options in VARIANTS.items():
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"uri": Param("/nonexistent", type="string")},
        tags=["sparktune-deployment-test"],
    ) as dag:
        wait_for_data = StagedDataSensor(
            task_id="wait_for_data",
            uri="{{ params.uri }}",
            success_marker="_SUCCESS",
            timeout=600,
            **options,  # type: ignore[arg-type]
        )
        HyperoptSparkOperator(
            task_id="tune",
            search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
            objective=rows_seen,
            data=wait_for_data.output,
            max_evals=2,
            parallelism=1,
            mlflow_conn_id="deploy_sensor_mlflow",
        )
    globals()[dag_id] = dag
