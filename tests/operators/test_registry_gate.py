from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.operators.registry_gate import ModelRegistryGateOperator
from tests.operators.test_hyperopt_spark import TEST_DAGS, asset_events, task_log, xcom_values
from tests.servers import MlflowServer, registry_refusing_proxy

CHAMPION_URI = "sparktune://model/registry_gate.model/champion"


@pytest.mark.unit
def test_constructor_does_no_validation_and_templates_the_rule() -> None:
    gate = ModelRegistryGateOperator(
        task_id="gate", model_uri="{{ x }}", registered_model_name="m", metric="auc", min_absolute_change="x"
    )
    assert {"model_uri", "metric", "min_absolute_change", "auto_promote", "tuning"} <= set(
        gate.template_fields
    )
    with pytest.raises(TuningConfigError, match="^min_absolute_change: rendered to 'x'"):
        gate._rule()


@pytest.mark.integration
def test_the_gate_promotes_keeps_and_fails_clearly_in_real_dag_runs(
    airflow_db: Any,
    mlflow_tracking_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_tracking_server.connection())
    client = MlflowClient(mlflow_tracking_server.uri)
    dag = DagBag(dag_folder=str(TEST_DAGS / "registry_gate.py")).get_dag("registry_gate")

    first = dag.test(run_conf={"auc": 0.9})
    assert first.state == "success"
    decided = xcom_values(first.run_id, "gate")["return_value"]
    assert (decided["decision"], decided["version"], decided["aliases"]) == ("promote", "1", ["champion"])
    assert decided["model_uri"] == "models:/registry_gate.model/1"
    assert decided["sparktune.data_uri"] == "s3://bucket/ds=2026-01-01/"  # no credentials
    assert asset_events("registry_gate", first.run_id) == [{"uri": CHAMPION_URI, "extra": decided}]
    version = client.get_model_version("registry_gate.model", "1")
    assert version.tags["sparktune.tuning_run_id"] == "tuning-run"
    assert version.tags["airflow.run_id"] == first.run_id
    assert "secret" not in json.dumps(version.tags) + json.dumps(decided)

    worse = dag.test(run_conf={"auc": 0.8})
    assert worse.state == "success"
    kept = xcom_values(worse.run_id, "gate")["return_value"]
    assert (kept["decision"], kept["version"], kept["champion_version"]) == ("keep", "2", "1")
    assert asset_events("registry_gate", worse.run_id) == []  # serving is not woken for a kept champion
    assert client.get_registered_model("registry_gate.model").aliases == {"champion": "1"}
    logged = task_log(worse.run_id, capfd.readouterr().out)
    assert f"KEEP: version 2 of 'registry_gate.model': {kept['reason']}" in logged

    with registry_refusing_proxy(mlflow_tracking_server.uri) as proxy:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": proxy.uri})
        )
        refused = dag.test(run_conf={"auc": 0.99})
    assert refused.state == "failed"
    assert proxy.refused >= 1
    trained = xcom_values(refused.run_id, "train")["return_value"]
    assert client.get_run(trained["run_id"]).info.status == "FINISHED"  # the model run is kept
    assert xcom_values(refused.run_id, "gate") == {}  # nothing decided
    assert asset_events("registry_gate", refused.run_id) == []
    assert client.get_registered_model("registry_gate.model").aliases == {"champion": "1"}
    assert "the model registry at http://127.0.0.1" in task_log(refused.run_id, capfd.readouterr().out)
