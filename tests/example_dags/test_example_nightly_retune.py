from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.operators.test_hyperopt_spark import runs_of, xcom_values

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.mark.integration
def test_nightly_example_is_a_daily_dag(airflow_db: Any) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES / "example_nightly_retune.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("example_nightly_retune")
    assert dag.schedule == "@daily"
    assert set(dag.task_ids) == {"export_features", "wait_for_data", "tune", "train_final_model", "gate"}


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:The `airflow.:FutureWarning")  # skops probes every module's attributes
def test_nightly_example_waits_tunes_and_trains_the_final_model(
    spark: Any, airflow_db: Any, mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(EXAMPLES / "example_nightly_retune.py")).get_dag("example_nightly_retune")
    dag_run = dag.test(run_conf={"data_root": str(tmp_path)})
    assert dag_run.state == "success"

    written = Path(xcom_values(dag_run.run_id, "export_features")["return_value"])
    plan = xcom_values(dag_run.run_id, "wait_for_data")["return_value"]
    assert written.parent == tmp_path / "breast_cancer" and (written / "_SUCCESS").exists()
    assert plan["uri"].rstrip("/") == str(written) and plan["format"] == "parquet"
    assert plan["mode"] == "broadcast" and plan["size_bytes"] == sum(
        p.stat().st_size for p in written.glob("part-*.parquet")
    )

    tuning = xcom_values(dag_run.run_id, "tune")["return_value"]
    assert tuning["staging"] == plan
    assert tuning["trials"] == {"total": 8, "ok": 8, "failed": 0, "cancelled": 0, "pruned": 0, "lost": 0}
    assert -1.0 <= tuning["best_loss"] < -0.95  # negative mean ROC AUC of 3-fold cross-validation
    assert set(tuning["best_params"]) == {"n_estimators", "learning_rate", "max_depth", "subsample"}
    parent = runs_of(mlflow_uri, "example_nightly_retune.tune", run_id=dag_run.run_id)[0]
    assert parent.data.params["staging_mode"] == "broadcast"
    client = MlflowClient(mlflow_uri)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 8
    assert all({"cv_score_mean", "cv_score_std", "fit_time_s"} <= set(c.data.metrics) for c in children)

    final = xcom_values(dag_run.run_id, "train_final_model")["return_value"]
    assert final["params"]["n_estimators"] == int(tuning["best_params"]["n_estimators"])
    assert isinstance(final["params"]["n_estimators"], int)
    model_run = client.get_run(final["run_id"])
    assert model_run.data.tags["sparktune.tuning_run_id"] == tuning["mlflow"]["run_id"]
    assert model_run.data.metrics["cv_roc_auc"] == pytest.approx(-tuning["best_loss"])
    assert model_run.data.params["max_depth"] == str(tuning["best_params"]["max_depth"])
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(final["model_uri"])
    assert model.n_estimators == final["params"]["n_estimators"]

    # The gate: a new version of the registered model, promoted unless the champion is better by 0.002.
    gate = xcom_values(dag_run.run_id, "gate")["return_value"]
    version = client.get_model_version("example_nightly_retune.model", gate["version"])
    assert version.run_id == final["run_id"]
    assert gate["value"] == pytest.approx(-tuning["best_loss"])  # cv_roc_auc of the tuned params
    assert version.tags["sparktune.gate.decision"] == gate["decision"] in ("promote", "keep")
    assert version.tags["sparktune.tuning_run_id"] == tuning["mlflow"]["run_id"]
    assert version.tags["sparktune.data_uri"] == plan["uri"]
    aliases = client.get_registered_model("example_nightly_retune.model").aliases
    if gate["previous_champion_version"] is None:
        assert gate["decision"] == "promote"  # the first night
    if gate["decision"] == "promote":
        assert str(aliases["champion"]) == gate["version"]
    else:
        assert str(aliases["champion"]) == gate["previous_champion_version"]
