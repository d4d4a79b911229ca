from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.operators.test_hyperopt_spark import asset_events, xcom_values

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.mark.integration
def test_report_dag_is_scheduled_on_the_tuning_asset(airflow_db: Any) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES / "example_nightly_consumers.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("example_nightly_report")
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [
        "sparktune://tuning/example_nightly_retune.tune"
    ]
    serving = bag.get_dag("example_nightly_serving")
    assert [a.uri for a in serving.timetable.asset_condition.objects] == [
        "sparktune://model/example_nightly_retune.model/champion"
    ]


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:The `airflow.:FutureWarning")  # skops probes every module's attributes
def test_report_and_serving_read_the_events_of_the_night(
    spark: Any, airflow_db: Any, mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    tuning = DagBag(dag_folder=str(EXAMPLES / "example_nightly_retune.py")).get_dag("example_nightly_retune")
    night = tuning.test(run_conf={"data_root": str(tmp_path)})
    assert night.state == "success"
    tuned = xcom_values(night.run_id, "tune")["return_value"]
    [event] = [e for e in asset_events("example_nightly_retune", night.run_id) if "/tuning/" in e["uri"]]
    assert event == {"uri": "sparktune://tuning/example_nightly_retune.tune", "extra": tuned}

    report = DagBag(dag_folder=str(EXAMPLES / "example_nightly_consumers.py")).get_dag(
        "example_nightly_report"
    )
    run = report.test()  # started by hand: the newest event, through inlet_events
    assert run.state == "success"
    read = xcom_values(run.run_id, "read_tuning_event")["return_value"]
    assert read == {
        "source_run_id": night.run_id,
        "triggered": False,
        "best_params": tuned["best_params"],
        "best_loss": tuned["best_loss"],
        "improved": tuned["improved"],
        "mlflow_run_id": tuned["mlflow"]["run_id"],
        "data_uri": tuned["staging"]["uri"],
    }

    # The gate's promotion event: serving scores with exactly the promoted version.
    gate = xcom_values(night.run_id, "gate")["return_value"]
    promotions = [e for e in asset_events("example_nightly_retune", night.run_id) if "/model/" in e["uri"]]
    if gate["decision"] != "promote":  # the session's store may hold a better champion from another test
        assert promotions == []
        return
    assert promotions == [{"uri": "sparktune://model/example_nightly_retune.model/champion", "extra": gate}]
    consumers = DagBag(dag_folder=str(EXAMPLES / "example_nightly_consumers.py"))
    served = consumers.get_dag("example_nightly_serving").test()
    assert served.state == "success"
    scored = xcom_values(served.run_id, "score_batch")["return_value"]
    assert scored["source_run_id"] == night.run_id
    assert scored["model_uri"] == f"models:/example_nightly_retune.model/{gate['version']}"
    assert scored["rows"] == 569 and 0.5 < scored["positive_share"] < 0.75  # breast cancer: 357 of 569
