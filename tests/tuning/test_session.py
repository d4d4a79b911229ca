"""A tuning session without Airflow: the MLflow record, resume and warm start a notebook user gets."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_sparktune import TrackingOptions, run_tuning
from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.tracking.store import open_client
from airflow_provider_sparktune.tracking.tracker import TuningTracker
from airflow_provider_sparktune.tracking.write_queue import RetryingWriter
from airflow_provider_sparktune.tuning.session import submit_closing_writes
from tests.tracking.test_tracker import record, result_of
from tests.tuning.test_run import UNIT_SPACE, half_second_x, shifted_x

pytestmark = pytest.mark.integration


def runs_of(uri: str, experiment: str) -> tuple[list[Any], list[Any]]:
    """(parent runs oldest first, trial runs) of an experiment."""
    client = open_client(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000, order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, trials


def test_run_tuning_records_resumes_and_warm_starts_like_the_operator(
    spark: Any, mlflow_uri: str, experiment_name: str
) -> None:
    def tune(run_key: str, offset: float, *, warm_start: bool = False, **settings: Any) -> Any:
        tracking = TrackingOptions(
            mlflow_uri,
            experiment_name,
            run_name=run_key,
            run_key=run_key,
            warm_start=warm_start,
            warm_start_k=2,
        )
        return run_tuning(
            UNIT_SPACE,
            shifted_x,
            spark=spark,
            tracking=tracking,
            objective_kwargs={"offset": offset},
            **settings,
        )

    night1 = tune("night-1", 0.0, max_evals=4, parallelism=2, seed=3)
    parents, trials = runs_of(mlflow_uri, experiment_name)
    assert len(parents) == 1 and len(trials) == 4
    first = parents[0]
    assert first.info.status == "FINISHED"
    assert first.data.tags["sparktune.run_key"] == "night-1"
    assert first.data.tags["sparktune.tuning_key"] == experiment_name  # the default key
    assert first.data.params["max_evals"] == "4" and first.data.params["staging_mode"] == "none"
    assert first.data.metrics["best_loss"] == night1.best_loss
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {first.info.run_id}

    # The same run key again: a retry. The four trials are resumed, not run again; two are new.
    retry = tune("night-1", 0.0, max_evals=6, parallelism=2, seed=3)
    assert [r.origin for r in retry.records] == ["resumed"] * 4 + ["new"] * 2
    assert [r.loss for r in retry.records[:4]] == [r.loss for r in night1.records]
    parents, _ = runs_of(mlflow_uri, experiment_name)
    assert parents[1].data.tags["sparktune.resumed_from"] == first.info.run_id

    # A new night with warm start: the two best points of the finished runs go first, evaluated again
    # with today's objective (the loss moved by the offset), not copied.
    best_two = sorted((r for r in retry.records if r.status == "ok"), key=lambda r: r.loss or 0)[:2]
    night2 = tune("night-2", 10.0, warm_start=True, max_evals=3, parallelism=1, seed=4)
    warm = [r for r in night2.records if r.origin == "warm_start"]
    assert [r.vals for r in warm] == [r.vals for r in best_two]
    assert [r.loss for r in warm] == pytest.approx([(r.loss or 0) + 10.0 for r in best_two])
    parents, _ = runs_of(mlflow_uri, experiment_name)
    assert "sparktune.resumed_from" not in parents[2].data.tags  # another run key: nothing to resume
    assert set(parents[2].data.tags["sparktune.warm_start.from_runs"].split(",")) == {
        parents[0].info.run_id,
        parents[1].info.run_id,
    }


def test_a_bad_tuning_key_is_refused_before_anything_runs(mlflow_uri: str) -> None:
    with pytest.raises(TuningConfigError, match=r"^tuning_key: \"x' or 1\" may hold only"):
        TrackingOptions(mlflow_uri, "e", tuning_key="x' or 1")


def test_the_spark_session_starts_while_mlflow_is_set_up_and_start_up_and_drain_are_reported(
    spark: Any, mlflow_uri: str, experiment_name: str
) -> None:

    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TuningSession

    made: dict[str, Any] = {}

    def make_spark() -> Any:  # a session that takes a second to start, as a JVM does
        made["at"], made["thread"] = time.time(), threading.current_thread()
        time.sleep(1.0)
        return spark

    prepared = prepare_run(
        UNIT_SPACE, shifted_x, objective_kwargs={"offset": 0.0}, max_evals=3, parallelism=2, seed=1
    )
    started_at = time.time()
    session = TuningSession(prepared, TrackingOptions(mlflow_uri, experiment_name))
    result = session.run(make_spark, started_at=started_at)
    [parent], trials = runs_of(mlflow_uri, experiment_name)
    assert made["thread"] is not threading.main_thread()
    assert made["at"] * 1000 <= parent.info.start_time  # asked for before the parent run existed
    assert len(trials) == 3 and parent.info.status == "FINISHED"
    first_trial = min(r.started_at or 0 for r in result.records)
    assert result.startup_s == pytest.approx(first_trial - started_at)
    assert result.startup_s >= 1.0  # no trial before the session existed
    assert parent.data.metrics["startup_s"] == result.startup_s
    assert result.drain_s is not None and 0 <= result.drain_s < result.duration_s + 60


def held(
    write: Callable[[], Any], started: threading.Semaphore, release: threading.Event
) -> Callable[[], Any]:
    """``write``, once it has said it started and ``release`` is set: a write kept in flight."""

    def call() -> Any:
        started.release()
        release.wait(10)
        return write()

    return call


def closing_writes(mlflow_uri: str, experiment: str, workers: int, held_trials: int) -> tuple[Any, list[Any]]:
    """Four trial runs (the first ``held_trials`` kept in flight until the run's closing writes are
    queued), then the closing writes; returns (parent run, trial runs) as MLflow has them."""
    tracker = TuningTracker(mlflow_uri, experiment)
    tracker.start(run_name="closing", tags={})
    records = [record(tid, loss=float(tid)) for tid in range(4)]
    started, release = threading.Semaphore(0), threading.Event()
    writer = RetryingWriter(workers=workers)
    for r in records:
        write = tracker.trial_write(r)
        writer.submit(f"trial {r.tid}", held(write, started, release) if r.tid < held_trials else write)
        if r.tid < held_trials:
            assert started.acquire(timeout=10)  # in flight before the next one is queued
    submit_closing_writes(writer, tracker, result_of(records))
    time.sleep(0.5)  # a close that does not wait for the held writes would happen now
    release.set()
    assert writer.close(timeout_s=60) == []
    [parent], trials = runs_of(mlflow_uri, experiment)
    assert parent.info.status == "FINISHED" and len(trials) == 4
    return parent, trials


def test_the_run_summary_is_written_ahead_of_queued_trial_runs(mlflow_uri: str, experiment_name: str) -> None:
    # one writer thread, as for a SQLite store: trial 0 in flight, trials 1-3 queued, the order visible
    parent, trials = closing_writes(mlflow_uri, experiment_name, workers=1, held_trials=1)
    client = open_client(mlflow_uri)
    loss_at = {
        int(t.data.tags["sparktune.tid"]): client.get_metric_history(t.info.run_id, "loss")[0].timestamp
        for t in trials
    }
    summary_at = client.get_metric_history(parent.info.run_id, "best_loss")[0].timestamp
    assert loss_at[0] <= summary_at <= min(loss_at[1], loss_at[2], loss_at[3])


def test_the_parent_run_is_closed_only_after_every_trial_run_in_flight_is_written(
    mlflow_uri: str, experiment_name: str
) -> None:
    # several writer threads, as against a tracking server: every trial write in flight at once and
    # a thread free for the closing writes
    parent, trials = closing_writes(mlflow_uri, experiment_name, workers=5, held_trials=4)
    client = open_client(mlflow_uri)
    assert parent.info.end_time >= max(
        client.get_metric_history(t.info.run_id, "loss")[0].timestamp for t in trials
    )


def test_the_tracking_uri_in_the_result_carries_no_credentials() -> None:
    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TuningSession

    prepared = prepare_run(
        UNIT_SPACE, shifted_x, objective_kwargs={"offset": 0.0}, max_evals=2, parallelism=1
    )
    options = TrackingOptions(
        "https://ann:tok-41d2@mlflow.example.com", "e", redact=lambda t: t.replace("7", "*")
    )
    session = TuningSession(prepared, options)
    assert session.mlflow_info["tracking_uri"] == "https://mlflow.example.com"  # XCom and the extra link
    assert session.redact("ftp://a:b@h/x took 7 s") == "ftp://h/x took * s"  # the caller's masker, then URIs


def failing_x(params: dict[str, Any]) -> float:
    raise ValueError(f"no loss for {params['x']}")


def test_a_failed_run_logs_its_unwritten_writes_as_json_and_a_failing_spark_stop_hides_nothing(
    spark: Any, mlflow_uri: str, experiment_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import sqlite3

    from airflow_provider_sparktune.exceptions import SparktuneError
    from airflow_provider_sparktune.tracking.store import sqlite_path
    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TuningSession

    database = sqlite_path(mlflow_uri)
    assert database is not None
    held: list[sqlite3.Connection] = []

    def hold_the_store(*_: Any) -> None:  # from the first finished trial on, no write gets through
        if not held:
            held.append(sqlite3.connect(database, timeout=30, check_same_thread=False))
            held[0].execute("BEGIN EXCLUSIVE")
            threading.Timer(12, held[0].rollback).start()  # then the parent run can be closed

    def stop_spark() -> None:
        raise RuntimeError("the Spark stop failed")

    prepared = prepare_run(UNIT_SPACE, failing_x, max_evals=3, parallelism=1, seed=0)
    session = TuningSession(
        prepared, TrackingOptions(mlflow_uri, experiment_name, retry_timeout=1.0), on_trial=hold_the_store
    )
    with caplog.at_level(logging.INFO), pytest.raises(SparktuneError) as failed:
        session.run(spark, stop_spark=stop_spark)
    assert "no loss for" in str(failed.value)  # the run's own error, not the Spark stop's
    assert "stopping Spark failed" in caplog.text
    assert session.unwritten
    line = next(r.getMessage() for r in caplog.records if "unwritten MLflow writes" in r.getMessage())
    writes = json.loads(line.split("as JSON: ", 1)[1])
    trial_writes = [w for w in writes if w["write"].startswith("trial ")]
    assert trial_writes and all("no loss for" in w["data"]["error"] for w in trial_writes)
    assert {w["data"]["status"] for w in trial_writes} == {"failed"}
    [parent], _ = runs_of(mlflow_uri, experiment_name)
    assert parent.info.status == "FAILED"


def test_a_spark_stop_that_fails_after_a_good_run_still_closes_its_parent_run(
    spark: Any, mlflow_uri: str, experiment_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TuningSession

    def stop_spark() -> None:
        raise RuntimeError("the Spark stop failed")

    prepared = prepare_run(UNIT_SPACE, shifted_x, objective_kwargs={"offset": 0.0}, max_evals=3, seed=0)
    with caplog.at_level(logging.INFO):
        result = TuningSession(prepared, TrackingOptions(mlflow_uri, experiment_name)).run(
            spark, stop_spark=stop_spark
        )
    assert result.trials_ok == 3 and "stopping Spark failed" in caplog.text
    [parent], trials = runs_of(mlflow_uri, experiment_name)
    assert parent.info.status == "FINISHED" and len(trials) == 3


def x_with_a_ranking_metric(params: dict[str, Any]) -> dict[str, Any]:
    return {"loss": params["x"], "metrics": {"precision@10": 0.5, "recall": 0.25}}


def test_an_objective_metric_mlflow_refuses_is_named_once_and_holds_up_no_write(
    spark: Any, mlflow_uri: str, experiment_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TuningSession

    prepared = prepare_run(UNIT_SPACE, x_with_a_ranking_metric, max_evals=3, parallelism=1, seed=0)
    session = TuningSession(prepared, TrackingOptions(mlflow_uri, experiment_name, retry_timeout=30))
    with caplog.at_level(logging.INFO):
        result = session.run(spark)
    assert session.unwritten == [] and result.trials_ok == 3
    assert all(r.metrics == {"precision@10": 0.5, "recall": 0.25} for r in result.records)  # XCom keeps it
    named = [r.getMessage() for r in caplog.records if "objective metrics.precision@10" in r.getMessage()]
    assert len(named) == 1 and "rename it in the objective's metrics, e.g. 'precision_10'" in named[0]
    [parent], trials = runs_of(mlflow_uri, experiment_name)
    assert parent.info.status == "FINISHED" and len(trials) == 3
    assert all(t.data.metrics.keys() == {"loss", "recall"} for t in trials)


def test_a_try_that_a_later_try_took_over_stops_and_leaves_the_later_decision_standing(
    spark: Any, mlflow_uri: str, experiment_name: str
) -> None:
    from airflow_provider_sparktune.exceptions import TuningCancelledError
    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TuningSession

    options = TrackingOptions(mlflow_uri, experiment_name, run_key="night-1")
    prepared = prepare_run(UNIT_SPACE, half_second_x, max_evals=12, parallelism=1, seed=0)
    retry: dict[str, Any] = {}

    def a_retry_starts(*_: Any) -> None:  # the scheduler gave up on this try and started the next one
        if not retry:
            tracker = retry["tracker"] = TuningTracker(mlflow_uri, experiment_name)
            tracker.start(run_name="try 2", tags=options.try_tags)
            TuningSession(prepared, options)._resume(tracker)  # finds this try RUNNING: closes it

    zombie = TuningSession(prepared, options, on_trial=a_retry_starts)
    zombie.fence_check_s = 0.0
    with pytest.raises(TuningCancelledError, match="superseded by MLflow run"):
        zombie.run(spark)
    run = open_client(mlflow_uri).get_run(zombie.mlflow_info["run_id"])
    assert run.info.status == "FAILED"  # as the retry left it: not FINISHED, not KILLED over it
    assert run.data.tags["sparktune.superseded_by"] == retry["tracker"].run_id
    assert "best_loss" not in run.data.metrics
