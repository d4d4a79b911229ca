"""Test DAG for the registry gate: a stand-in training task logs a model run, the gate registers it."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_sparktune.operators.assets import model_asset
from airflow_provider_sparktune.operators.registry_gate import ModelRegistryGateOperator

MODEL = "registry_gate.model"

with DAG(
    dag_id="registry_gate",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"auc": Param(0.9, type="number"), "auto_promote": Param(True, type="boolean")},
) as dag:

    @task
    def train(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A model run: its MLmodel file and the metric the gate compares (no real fit: not under test)."""
        from airflow_provider_sparktune.hooks.mlflow import MlflowHook
        from airflow_provider_sparktune.tracking.store import open_client

        client = open_client(MlflowHook().get_tracking_uri())
        found = client.get_experiment_by_name("registry_gate.train")
        experiment_id = found.experiment_id if found else client.create_experiment("registry_gate.train")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_text(run_id, "flavors: {}\n", "model/MLmodel")
        client.log_metric(run_id, "cv_roc_auc", float((params or {})["auc"]))
        client.set_terminated(run_id)
        return {"model_uri": f"runs:/{run_id}/model", "run_id": run_id}

    trained = train()
    ModelRegistryGateOperator(
        task_id="gate",
        model_uri="{{ ti.xcom_pull(task_ids='train')['model_uri'] }}",
        registered_model_name=MODEL,
        metric="cv_roc_auc",
        min_absolute_change=0.005,
        auto_promote="{{ params.auto_promote }}",
        tuning={
            "mlflow": {"run_id": "tuning-run"},
            "staging": {"uri": "s3://key:secret@bucket/ds=2026-01-01/"},
            "tuning_key": "registry_gate.tune",
        },
        outlets=[model_asset(MODEL)],
    ).set_upstream(trained)
