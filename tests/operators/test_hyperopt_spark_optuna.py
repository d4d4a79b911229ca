"""The operator with an Optuna searcher and two losses, under a real ``dag.test()``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.operators.test_hyperopt_spark import TEST_DAGS, runs_of, xcom_values


@pytest.mark.integration
def test_an_optuna_searcher_on_two_losses_runs_under_dag_test(
    spark: Any, airflow_db: Any, mlflow_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient
    from mlflow.artifacts import load_dict

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "optuna_tuning.py")).get_dag("optuna_tuning")
    dag_run = dag.test(run_conf={"experiment": experiment_name})
    assert dag_run.state == "success"
    value = xcom_values(dag_run.run_id, "tune")["return_value"]
    assert value["trials"]["total"] == 8 and value["trials"]["ok"] == 8
    assert value["directions"] == {"error": "minimize", "latency_ms": "minimize"}
    front = value["pareto_front"]
    assert front and len({p["tid"] for p in front}) == len(front)
    errors = [p["losses"]["error"] for p in front]
    assert errors == sorted(errors)  # best primary loss first
    assert value["best_params"] == front[0]["params"] and value["best_loss"] == pytest.approx(errors[0])

    (parent,) = runs_of(mlflow_uri, experiment_name, run_id=dag_run.run_id)
    params = parent.data.params
    assert (params["algo"], json.loads(params["algo_options"])) == ("optuna.tpe", {"n_startup_trials": 4})
    assert parent.data.tags["sparktune.pareto_front"] == ",".join(str(p["tid"]) for p in front)
    trial_runs = [r for r in runs_of(mlflow_uri, experiment_name) if "mlflow.parentRunId" in r.data.tags]
    assert len(trial_runs) == 8
    assert all({"loss.error", "loss.latency_ms"} <= set(r.data.metrics) for r in trial_runs)
    on_front = {
        r.data.tags["sparktune.tid"] for r in trial_runs if "sparktune.pareto_front_of" in r.data.tags
    }
    assert on_front == {str(p["tid"]) for p in front}
    assert {r.data.tags.get("sparktune.pareto_front_of") for r in trial_runs} <= {parent.info.run_id, None}
    saved = load_dict(f"{parent.info.artifact_uri}/pareto_front.json")
    assert saved == front
    names = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(parent.info.run_id)}
    assert "pareto_front.png" in names


@pytest.mark.integration
def test_every_searcher_runs_through_the_operator_under_dag_test(
    spark: Any, airflow_db: Any, mlflow_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.every_searcher_tuning import SEARCHERS

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "every_searcher_tuning.py")).get_dag("every_searcher_tuning")
    dag_run = dag.test(run_conf={"experiment": experiment_name})
    assert dag_run.state == "success"
    parents = runs_of(mlflow_uri, experiment_name, run_id=dag_run.run_id)
    assert sorted(p.data.params["algo"] for p in parents) == sorted(SEARCHERS)
    for algo in SEARCHERS:
        value = xcom_values(dag_run.run_id, f"tune_{algo.replace('.', '_')}")["return_value"]
        assert value["trials"] == {**value["trials"], "total": 6, "ok": 6}, algo
        assert 0 <= value["best_params"]["x"] <= 1 and value["best_params"]["y"] in range(5), algo
