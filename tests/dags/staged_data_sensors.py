"""Test DAGs for StagedDataSensor: the dataset URI and its marker come from run conf."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_sparktune.sensors.staged_data import StagedDataSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
PARAMS = {"uri": Param("/nonexistent", type="string"), "marker": Param("", type="string")}

VARIANTS = {
    "staged_data_poke": {"poke_interval": 0.5, "timeout": 60},
    "staged_data_reschedule": {"mode": "reschedule", "poke_interval": 1, "timeout": 60},
    "staged_data_timeout": {"poke_interval": 0.3, "timeout": 1.5},
    "staged_data_soft_fail": {"poke_interval": 0.3, "timeout": 1.5, "soft_fail": True},
    "staged_data_reschedule_timeout": {"mode": "reschedule", "poke_interval": 0.3, "timeout": 1.5},
    "staged_data_reschedule_soft_fail": {
        "mode": "reschedule",
        "poke_interval": 0.3,
        "timeout": 1.5,
        "soft_fail": True,
    },
    "staged_data_deferrable": {"deferrable": True, "poke_interval": 0.5, "timeout": 60},
    "staged_data_deferrable_soft_fail": {
        "deferrable": True,
        "poke_interval": 0.3,
        "timeout": 1.5,
        "soft_fail": True,
    },
}

for dag_id, options in VARIANTS.items():
    with DAG(dag_id=dag_id, schedule=None, start_date=START, params=PARAMS) as dag:
        StagedDataSensor(
            task_id="wait_for_data",
            uri="{{ params.uri }}",
            success_marker="{{ params.marker }}",
            **options,  # type: ignore[arg-type]
        )
    globals()[dag_id] = dag
