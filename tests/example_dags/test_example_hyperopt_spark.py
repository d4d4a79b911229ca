from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sparktune.links import mlflow_run_url
from tests.operators.test_hyperopt_spark import latest_run_id, runs_of, xcom_values
from tests.servers import MlflowServer, SparkCluster, airflow_dags_test, spark_connect_server

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.mark.integration
def test_example_dags_import_cleanly(airflow_db: Any) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert "example_hyperopt_spark" in bag.dag_ids


@pytest.mark.integration
def test_example_reproduces_the_notebook_result(
    spark: Any, airflow_db: Any, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(EXAMPLES / "example_hyperopt_spark.py")).get_dag("example_hyperopt_spark")
    dag_run = dag.test()
    assert dag_run.state == "success"

    xcoms = xcom_values(dag_run.run_id, "tune")
    value = xcoms["return_value"]
    assert value["best_params"] == {"model": {"name": "model a", "x": 1}}
    assert value["best_loss"] == 1.0
    assert value["argmin"] == {"my_choice": 0, "model_a_x": 0}
    assert value["trials"] == {"total": 10, "ok": 10, "failed": 0, "cancelled": 0, "pruned": 0, "lost": 0}
    assert value["stopped_reason"] == "max_evals"
    assert value["staging"] is None
    assert xcoms["best_params"] == value["best_params"]
    assert xcom_values(dag_run.run_id, "report")["return_value"] == value["best_params"]
    json.dumps(value, allow_nan=False)

    parents = runs_of(mlflow_uri, "example_hyperopt_spark.tune", run_id=dag_run.run_id)
    assert [p.info.run_id for p in parents] == [value["mlflow"]["run_id"]]
    parent = parents[0]
    assert value["mlflow"]["tracking_uri"] == mlflow_uri
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["airflow.dag_id"] == "example_hyperopt_spark"
    assert parent.data.tags["airflow.task_id"] == "tune"
    assert parent.data.tags["airflow.try_number"] == "1"
    assert parent.data.params["max_evals"] == "10"
    assert parent.data.metrics["best_loss"] == 1.0
    # from the task's start to the first trial, in XCom and as a parent-run metric
    assert parent.data.metrics["startup_s"] == pytest.approx(value["startup_s"], abs=1e-3)
    assert 0 < value["startup_s"] and value["drain_s"] >= 0
    children = MlflowClient(mlflow_uri).search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 10
    best_child = min(children, key=lambda r: r.data.metrics["loss"])
    assert best_child.data.params == {"model.name": "model a", "model.x": "1"}


@pytest.mark.integration
def test_example_on_the_cluster_with_the_tracking_server(
    spark_cluster: SparkCluster, mlflow_tracking_server: MlflowServer, airflow_db: Any
) -> None:
    from mlflow import MlflowClient

    env = {
        "AIRFLOW_CONN_SPARK_DEFAULT": spark_cluster.connection(connect_timeout=90),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_tracking_server.connection(),
    }
    done = airflow_dags_test("example_hyperopt_spark", env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    value = xcom_values(latest_run_id("example_hyperopt_spark"), "tune")["return_value"]
    assert value["best_params"] == {"model": {"name": "model a", "x": 1}}
    assert value["best_loss"] == 1.0
    assert "sparktune-example_hyperopt_spark.tune" in [
        a["name"] for a in spark_cluster.apps()["completedapps"]
    ]

    mlflow = value["mlflow"]
    assert mlflow["tracking_uri"] == mlflow_tracking_server.uri
    assert (
        mlflow_run_url(mlflow)
        == f"{mlflow_tracking_server.uri}/#/experiments/{mlflow['experiment_id']}/runs/{mlflow['run_id']}"
    )
    client = MlflowClient(mlflow_tracking_server.uri)
    assert client.get_run(mlflow["run_id"]).info.status == "FINISHED"
    children = client.search_runs(
        [mlflow["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{mlflow['run_id']}'"
    )
    assert len(children) == 10
    best_params = Path(client.download_artifacts(mlflow["run_id"], "best_params.json")).read_text()
    assert json.loads(best_params) == value["best_params"]


@pytest.mark.integration
def test_example_over_spark_connect_with_a_token(tmp_path: Path, airflow_db: Any) -> None:
    from mlflow import MlflowClient

    token = "connect-example-token-7f3a"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with spark_connect_server(tmp_path / "connect", token=token) as server:
        env = {
            "AIRFLOW_CONN_SPARK_DEFAULT": server.connection(),  # type spark_connect, the token as password
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
        }
        done = airflow_dags_test("example_hyperopt_spark", env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "Connecting to Spark Connect at sc://localhost:" in output
    assert token not in output
    value = xcom_values(latest_run_id("example_hyperopt_spark"), "tune")["return_value"]
    assert value["best_params"] == {"model": {"name": "model a", "x": 1}}
    assert value["best_loss"] == 1.0
    assert value["trials"] == {"total": 10, "ok": 10, "failed": 0, "cancelled": 0, "pruned": 0, "lost": 0}
    assert token not in json.dumps(value)
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(value["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED"
    assert token not in json.dumps([parent.data.params, parent.data.tags])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 10 and all(c.info.status == "FINISHED" for c in children)
