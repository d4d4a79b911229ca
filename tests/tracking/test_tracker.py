from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import TrackingError
from airflow_provider_sparktune.tracking.tracker import (
    FENCE_OFF_AFTER,
    TuningTracker,
    batches,
    check_reachable,
    client_settings,
    flatten,
    local_artifact_root,
)
from airflow_provider_sparktune.tracking.trials_artifact import read_trials
from airflow_provider_sparktune.tuning.records import TrialRecord, TuningResult
from airflow_provider_sparktune.tuning.spec import TuningSpec
from tests.servers import RestartableMlflowServer, free_port


def record(tid: int, status: str = "ok", loss: float | None = 1.0, **params: Any) -> TrialRecord:
    now = time.time()
    return TrialRecord(
        tid=tid,
        status=status,  # type: ignore[arg-type]
        loss=loss,
        params=params or {"model": {"name": "model a", "x": tid}},
        vals={"x": tid},
        metrics={"auc": 0.5 + tid / 100} if status == "ok" else {},
        error="Traceback ...\nValueError: boom" if status == "failed" else None,
        started_at=now - 2,
        finished_at=now - 1,
    )


def result_of(records: list[TrialRecord]) -> TuningResult:
    ok = [r for r in records if r.status == "ok"]
    best = min(ok, key=lambda r: r.loss or 0)
    return TuningResult(
        best_params=best.params,
        best_loss=best.loss or 0.0,
        argmin=best.vals,
        trials_total=len(records),
        trials_ok=len(ok),
        trials_failed=sum(r.status == "failed" for r in records),
        trials_cancelled=sum(r.status == "cancelled" for r in records),
        stopped_reason="max_evals",
        duration_s=3.5,
        efficiency=0.8,
        trial_overhead_s=0.25,
        startup_s=1.5,
        spec=TuningSpec(max_evals=3, parallelism=2, seed=7),
        records=tuple(records),
    )


@pytest.mark.unit
def test_flatten_uses_dotted_keys() -> None:
    assert flatten({"model": {"name": "a", "layers": [8, 4]}, "lr": 0.1}) == {
        "model.name": "a",
        "model.layers.0": 8,
        "model.layers.1": 4,
        "lr": 0.1,
    }
    assert flatten(3) == {"value": 3}


@pytest.mark.unit
def test_sqlite_artifacts_live_beside_the_database(tmp_path: Any) -> None:
    root = local_artifact_root(f"sqlite:///{tmp_path}/mlflow.db")
    assert root == (tmp_path / "mlartifacts").as_uri()
    assert local_artifact_root("http://127.0.0.1:5000") is None


@pytest.mark.unit
def test_unreachable_server_fails_fast() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port} is unreachable"):
        check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - started < 10


@pytest.fixture(params=["sqlite-store", "tracking-server"])
def store_uri(request: pytest.FixtureRequest, mlflow_uri: str) -> str:
    """Both kinds of store users run: an embedded SQLite file and a real ``mlflow server``."""
    if request.param == "sqlite-store":
        return mlflow_uri
    return str(request.getfixturevalue("mlflow_tracking_server").uri)


@pytest.mark.integration
def test_parent_and_child_runs_read_back(store_uri: str, experiment_name: str) -> None:
    from mlflow import MlflowClient

    mlflow_uri = store_uri
    tracker = TuningTracker(mlflow_uri, experiment_name)
    space = {"x": {"hp": "uniform", "low": 0, "high": 1}}
    tracker.start(
        run_name="tune try 1", tags={"airflow.dag_id": "d", "airflow.try_number": "1"}, search_space=space
    )
    spec = TuningSpec(max_evals=3, parallelism=2, seed=7)
    tracker.log_spec(spec, {"staging_mode": "none"})
    records = [record(0, loss=2.0), record(1, "failed", None), record(2, loss=0.5)]
    child_ids = [tracker.log_trial(r) for r in records]
    tracker.finish(result_of(records))

    client = MlflowClient(mlflow_uri)
    parent = client.get_run(tracker.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["airflow.dag_id"] == "d"
    assert parent.data.params["max_evals"] == "3"
    assert parent.data.params["seed"] == "7"
    assert parent.data.params["staging_mode"] == "none"
    assert parent.data.metrics["best_loss"] == 0.5
    assert parent.data.metrics["trials_failed"] == 1
    assert parent.data.metrics["efficiency"] == 0.8
    assert parent.data.metrics["trial_overhead_s"] == 0.25
    assert parent.data.metrics["startup_s"] == 1.5
    artifacts = {f.path for f in client.list_artifacts(tracker.run_id)}
    assert {"best_params.json", "trials", "loss_per_trial.png", "search_space.json"} <= artifacts
    best_params_file = client.download_artifacts(tracker.run_id, "best_params.json")
    assert json.loads(Path(best_params_file).read_text()) == {"model": {"name": "model a", "x": 2}}
    assert [t["status"] for t in read_trials(client, tracker.run_id)] == ["ok", "failed", "ok"]

    children = client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{tracker.run_id}'"
    )
    assert sorted(r.info.run_id for r in children) == sorted(child_ids)
    by_tid = {int(r.data.tags["sparktune.tid"]): r for r in children}
    assert by_tid[0].data.params == {"model.name": "model a", "model.x": "0"}
    assert by_tid[0].data.metrics["loss"] == 2.0
    assert by_tid[0].data.metrics["auc"] == pytest.approx(0.5)
    assert by_tid[0].info.status == "FINISHED"
    assert by_tid[1].info.status == "FAILED"
    assert "ValueError: boom" in by_tid[1].data.tags["sparktune.error"]
    assert "loss" not in by_tid[1].data.metrics
    assert by_tid[2].info.end_time - by_tid[2].info.start_time == pytest.approx(1000, abs=5)


@pytest.mark.integration
def test_without_matplotlib_the_run_finishes_without_its_plot(
    store_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow import MlflowClient

    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # what an install without the plot extra has
    tracker = TuningTracker(store_uri, experiment_name)
    tracker.start(run_name="tune try 1", tags={}, search_space={"x": {"hp": "uniform", "low": 0, "high": 1}})
    records = [record(0, loss=2.0), record(1, loss=0.5)]
    with caplog.at_level(logging.INFO, logger="airflow_provider_sparktune.tracking.tracker"):
        tracker.finish(result_of(records))

    client = MlflowClient(store_uri)
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
    artifacts = {f.path for f in client.list_artifacts(tracker.run_id)}
    assert {"best_params.json", "trials"} <= artifacts and "loss_per_trial.png" not in artifacts
    assert [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()] == [
        "matplotlib is not installed: no loss_per_trial.png (pip install 'airflow-provider-sparktune[plot]')"
    ]


@pytest.mark.integration
def test_more_params_than_one_batch_holds(mlflow_uri: str, experiment_name: str) -> None:
    from mlflow import MlflowClient

    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="wide", tags={})
    wide = record(0, **{f"p{i:03d}": i for i in range(250)})
    run_id = tracker.log_trial(wide)
    assert len(MlflowClient(mlflow_uri).get_run(run_id).data.params) == 250


@pytest.mark.integration
def test_the_summary_leaves_the_parent_running_until_it_is_closed(
    mlflow_uri: str, experiment_name: str
) -> None:
    from mlflow import MlflowClient

    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="summary first", tags={})
    records = [record(0, loss=2.0), record(1, loss=0.5)]
    tracker.summary_write(result_of(records))()
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(tracker.run_id)
    assert parent.info.status == "RUNNING"  # trial runs may still be on their way
    assert parent.data.metrics["best_loss"] == 0.5
    assert {"best_params.json", "trials", "loss_per_trial.png"} <= {
        f.path for f in client.list_artifacts(tracker.run_id)
    }
    tracker.close_finished()
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


@pytest.mark.integration
def test_end_marks_the_parent_killed(mlflow_uri: str, experiment_name: str) -> None:
    from mlflow import MlflowClient

    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="killed", tags={})
    tracker.end("KILLED", "tuning run cancelled (killed)")
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["sparktune.error"] == "tuning run cancelled (killed)"


@pytest.mark.integration
def test_staging_plan_is_a_tag_and_an_artifact(mlflow_uri: str, experiment_name: str) -> None:
    from mlflow import MlflowClient

    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="r", tags={})
    plan = {
        "uri": "/d.parquet",
        "format": "parquet",
        "size_bytes": 10,
        "threshold_bytes": 20,
        "mode": "broadcast",
        "reason": "10 B of data files is below the broadcast threshold",
    }
    tracker.log_staging(plan)
    client = MlflowClient(mlflow_uri)
    assert client.get_run(tracker.run_id).data.tags["sparktune.staging_reason"] == plan["reason"]
    path = client.download_artifacts(tracker.run_id, "staging_plan.json")
    with open(path) as handle:
        assert json.load(handle) == plan


@pytest.mark.integration
def test_runs_closed_on_a_server_print_no_links(
    mlflow_tracking_server: Any, experiment_name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with client_settings():
        tracker = TuningTracker(mlflow_tracking_server.uri, experiment_name)
        tracker.start(run_name="parent", tags={})
        tracker.log_trial(record(0))
        tracker.end("KILLED")
    assert "View run" not in capfd.readouterr().out


@pytest.mark.unit
def test_a_trial_run_s_params_metrics_and_tags_go_in_one_request() -> None:
    from mlflow.entities import Metric, Param, RunTag

    params = [Param("a", "1.5"), Param("model.name", "tree")]
    metrics = [Metric("loss", 0.3, 0, 0), Metric("eval_time_s", 0.1, 0, 0)]
    tags = [RunTag("sparktune.status", "ok")]
    assert list(batches(params, metrics, tags)) == [(params, metrics, tags)]


@pytest.mark.unit
def test_batches_keep_within_mlflow_s_limits_and_lose_nothing() -> None:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.validation import MAX_BATCH_LOG_REQUEST_SIZE, _validate_batch_log_limits

    params = [Param(f"p{i}", "v" * 6000) for i in range(250)]  # the longest values this provider writes
    metrics = [Metric("loss", float(i), 0, i) for i in range(1500)]
    tags = [RunTag(f"t{i}", "w" * 8000) for i in range(150)]
    seen: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
    for part in batches(params, metrics, tags):
        _validate_batch_log_limits(part[1], part[0], part[2])  # MLflow's own check (metrics first)
        body = json.dumps(
            {
                kind: [{"key": e.key, "value": e.value} for e in some]
                for kind, some in zip("pmt", part, strict=True)
            }
        )
        assert len(body) < MAX_BATCH_LOG_REQUEST_SIZE
        for everything, some in zip(seen, part, strict=True):
            everything.extend(some)
    assert seen == (params, metrics, tags)  # each once, in order


@pytest.mark.integration
def test_a_try_superseded_by_a_later_one_writes_no_summary_and_no_status_over_it(
    mlflow_uri: str, experiment_name: str
) -> None:
    zombie = TuningTracker(mlflow_uri, experiment_name)
    zombie.start(run_name="try 1", tags={})
    retry = TuningTracker(mlflow_uri, experiment_name)
    retry.start(run_name="try 2", tags={})
    assert retry.supersede(zombie.run_id)  # what a retry does with an earlier try left RUNNING

    records = [record(0, loss=0.5)]
    zombie.summary_write(result_of(records))()
    zombie.close_finished()
    zombie.end("KILLED", "interrupted")
    run = zombie.client.get_run(zombie.run_id)
    assert run.info.status == "FAILED" and "best_loss" not in run.data.metrics
    assert zombie.superseded_by == retry.run_id

    finished = TuningTracker(mlflow_uri, experiment_name)  # an earlier try that ended meanwhile
    finished.start(run_name="try 0", tags={})
    finished.close_finished()
    assert not retry.supersede(finished.run_id)
    run = finished.client.get_run(finished.run_id)
    assert run.info.status == "FINISHED" and "sparktune.superseded_by" not in run.data.tags


@pytest.mark.integration
@pytest.mark.timeout(300)  # with MLflow's default retries each failed check would take minutes
def test_a_store_that_stops_answering_the_zombie_try_check_is_logged_not_silent(
    mlflow_outage_server: RestartableMlflowServer, experiment_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The check that stops a zombie try swallows store errors (the trials go on without MLflow): the
    first is a warning with its error, three in a row an error that the fence is off, then a line
    when the store answers again."""
    server = mlflow_outage_server
    tracker = TuningTracker(server.uri, experiment_name)
    tracker.start(run_name="try 1", tags={})
    logger = "airflow_provider_sparktune.tracking.tracker"
    with client_settings(), caplog.at_level(logging.WARNING, logger=logger):  # requests fail in seconds
        assert tracker.poll_superseded() is False
        assert caplog.records == []
        server.stop()
        try:
            assert [tracker.poll_superseded() for _ in range(FENCE_OFF_AFTER + 2)] == [False] * 5
        finally:
            server.start()
        lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger]
        assert len(lines) == 2, lines  # not one line per failed check
        (first_level, first), (off_level, off) = lines
        assert first_level == logging.WARNING
        assert first.startswith(
            f"zombie-try check: MLflow store {server.uri} did not say whether a later try"
        )
        assert "MlflowException: " in first and "the check is made again" in first
        assert off_level == logging.ERROR
        assert off.startswith(
            f"zombie-try check off: MLflow store {server.uri} failed the last 3 checks, over "
        )
        assert "nothing stops this try, and both run trials and write to MLflow" in off
        assert "bring the store back, or stop this try by hand if a later one runs" in off
        caplog.clear()
        assert tracker.poll_superseded() is False
    assert [r.getMessage() for r in caplog.records if r.name == logger] == [
        f"zombie-try check: MLflow store {server.uri} answers again, after 5 failed checks"
    ]
    assert tracker.fence_failures == 0


@pytest.mark.integration
def test_the_zombie_try_check_hides_credentials_of_the_store_in_its_lines(
    mlflow_outage_server: RestartableMlflowServer, experiment_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = mlflow_outage_server
    port = server.uri.rsplit(":", 1)[1]
    tracker = TuningTracker(server.uri, experiment_name)
    tracker.start(run_name="try 1", tags={})
    tracker.tracking_uri = f"http://sparktune-user:s3cret-Pw@127.0.0.1:{port}"  # as a connection may name it
    tracker.client = TuningTracker(tracker.tracking_uri, experiment_name).client
    server.stop()
    try:
        with (
            client_settings(),
            caplog.at_level(logging.WARNING, logger="airflow_provider_sparktune.tracking.tracker"),
        ):
            for _ in range(FENCE_OFF_AFTER):
                tracker.poll_superseded(lambda text: text.replace("sparktune-user", "***"))
    finally:
        server.start()
    assert sum(r.name == "airflow_provider_sparktune.tracking.tracker" for r in caplog.records) == 2
    assert "s3cret-Pw" not in caplog.text and "sparktune-user" not in caplog.text
    assert f"MLflow store http://127.0.0.1:{port} did not say" in caplog.text


@pytest.mark.unit
def test_client_settings_stay_while_any_block_is_inside_in_any_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run still ending in one thread leaves its block while the next run's block is inside: the
    short MLflow retries must stay for the one still inside (else a check waits minutes)."""
    import os
    import threading

    from airflow_provider_sparktune.tracking.tracker import CLIENT_SETTINGS

    for key in CLIENT_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    inside, leave = threading.Event(), threading.Event()

    def ending_run() -> None:
        with client_settings():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=ending_run)
    thread.start()
    assert inside.wait(10)
    with client_settings():
        leave.set()
        thread.join(10)  # the other block has ended
        assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") == "1"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the last block out takes them away
