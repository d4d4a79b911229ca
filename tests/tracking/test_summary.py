from __future__ import annotations

import pytest

from airflow_provider_sparktune.tracking.summary import lost_line, main, staging_line, ui_command
from airflow_provider_sparktune.tracking.tracker import TuningTracker
from tests.tracking.test_tracker import record, result_of


@pytest.mark.unit
def test_ui_command_for_a_local_store_and_a_server() -> None:
    assert "mlflow ui --backend-store-uri sqlite:////tmp/m.db --host 127.0.0.1" in ui_command(
        "sqlite:////tmp/m.db"
    )
    assert ui_command("http://mlflow:5000") == "open http://mlflow:5000 in a browser"


@pytest.mark.integration
def test_prints_the_best_params_of_the_latest_run(
    mlflow_uri: str, experiment_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="r", tags={})
    records = [record(0, loss=3.0), record(1, loss=1.0)]
    for r in records:
        tracker.log_trial(r)
    tracker.finish(result_of(records))
    assert main(["--tracking-uri", mlflow_uri, "--experiment", experiment_name]) == 0
    out = capsys.readouterr().out
    assert 'best params: {"model": {"name": "model a", "x": 1}}' in out
    assert tracker.run_id in out


@pytest.mark.integration
def test_unknown_experiment_is_an_error(mlflow_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tracking-uri", mlflow_uri, "--experiment", "nobody-tuned-this"]) == 1
    assert "no finished tuning run" in capsys.readouterr().err


@pytest.mark.unit
def test_staging_line_from_the_parent_params() -> None:
    params = {"staging_mode": "reload", "staging_uri": "s3://b/features/", "staging_size_bytes": "3221225472"}
    assert staging_line(params) == "reload of s3://b/features/ (3.0 GiB)"
    assert staging_line({"staging_mode": "none"}) == ""
    assert staging_line({}) == ""


@pytest.mark.integration
def test_lost_trial_attempts_are_a_metric_and_a_line_of_their_own(
    mlflow_uri: str, experiment_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    from airflow_provider_sparktune.tracking.store import open_client

    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="r", tags={})
    records = [record(0, loss=3.0), record(1, loss=1.0)]
    for r in records:
        tracker.log_trial(r)
    tracker.finish(replace(result_of(records), trials_lost=2))
    metrics = open_client(mlflow_uri).get_run(tracker.run_id).data.metrics
    assert (metrics["trials_lost"], metrics["trials_failed"]) == (2, 0)
    assert main(["--tracking-uri", mlflow_uri, "--experiment", experiment_name]) == 0
    assert "lost:        2 trial attempts lost with their Spark task and run again" in capsys.readouterr().out


@pytest.mark.unit
def test_the_lost_line_only_when_an_attempt_was_lost() -> None:
    assert lost_line({"trials_lost": 1.0}) == "1 trial attempt lost with its Spark task and run again"
    assert lost_line({"trials_lost": 0.0}) == ""
    assert lost_line({}) == ""  # runs logged before the count existed
