"""A trial whose Spark task is lost runs again: the cluster's failure is not the objective's.

Real local Spark and the resident dispatcher; the objective kills its own Python worker, as the OOM
killer would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.tuning.spec import TuningSpec

SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}}


def dies_the_first_time(params: dict[str, Any], marker_dir: str, doomed: int) -> float:
    """The worker running it is killed the first time the ``doomed``-th point is evaluated."""
    seen = sorted(Path(marker_dir).glob("seen-*"))
    mine = Path(marker_dir) / f"seen-{params['x']!r}"
    if not mine.exists():
        mine.write_text(str(os.getpid()))
        if len(seen) == doomed:  # the doomed point's first attempt: the worker dies mid-trial
            os.kill(os.getpid(), signal.SIGKILL)
    return float(params["x"])


def always_dies_on_one_point(params: dict[str, Any], marker_dir: str) -> float:
    """The first point evaluated kills its worker every time it runs; the others return."""
    doomed = Path(marker_dir) / "doomed"
    try:
        with open(doomed, "x") as first:  # one point, whichever task gets there first
            first.write(repr(params["x"]))
    except FileExistsError:
        pass
    if doomed.read_text() == repr(params["x"]):
        attempts = Path(marker_dir) / f"attempt-{len(list(Path(marker_dir).glob('attempt-*')))}"
        attempts.write_text(repr(params["x"]))
        os._exit(137)
    return float(params["x"])


@pytest.mark.integration
def test_a_trial_whose_worker_is_killed_runs_again_and_counts_as_lost_not_failed(
    spark: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, mlflow_uri: str, experiment_name: str
) -> None:
    from airflow_provider_sparktune.operators.xcom import to_xcom
    from airflow_provider_sparktune.tracking import schema
    from airflow_provider_sparktune.tracking.store import open_client
    from airflow_provider_sparktune.tuning.session import TrackingOptions, run_tuning

    with caplog.at_level(logging.INFO, logger="airflow_provider_sparktune"):
        result = run_tuning(
            SPACE, dies_the_first_time, spark=spark, max_evals=4, parallelism=1, seed=0, timeout=240,
            objective_kwargs={"marker_dir": str(tmp_path), "doomed": 1},
            tracking=TrackingOptions(mlflow_uri, experiment_name),
        )  # fmt: skip
    assert [r.status for r in result.records] == ["ok"] * 4, [r.error for r in result.records]
    assert (result.trials_total, result.trials_ok, result.trials_failed, result.trials_lost) == (4, 4, 0, 1)
    assert len({r.tid for r in result.records}) == 4  # the re-run kept its trial id: no gap, no extra
    assert len(list(tmp_path.glob("seen-*"))) == 4  # the lost point ran again with the same params
    assert "its Spark task was lost (attempt 1 of 3); re-running it" in caplog.text
    assert to_xcom(result)["trials"] == {
        "total": 4,
        "ok": 4,
        "failed": 0,
        "cancelled": 0,
        "pruned": 0,
        "lost": 1,
    }
    assert result.trials.count_by_state_unsynced(2) == 4  # hyperopt's documents: four done, none left open
    assert "(4 ok, 0 failed, 0 cancelled, 0 pruned; 1 lost and re-run)" in caplog.text
    client = open_client(mlflow_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if schema.PARENT_RUN not in r.data.tags)
    assert (parent.data.metrics["trials_lost"], parent.data.metrics["trials_failed"]) == (1, 0)
    children = [r for r in runs if schema.PARENT_RUN in r.data.tags]  # a run per trial, not per attempt
    assert sorted(int(r.data.tags[schema.TID]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags[schema.STATUS] for r in children} == {"ok"}


def slow_and_dies_the_first_time(params: dict[str, Any], marker_dir: str, doomed: int) -> float:
    import time

    time.sleep(1.5)  # the other task is mid-trial when this one dies
    return dies_the_first_time(params, marker_dir, doomed)


@pytest.mark.integration
def test_trials_lost_side_by_side_all_run_again(spark: Any, tmp_path: Path) -> None:
    """In local mode one dead worker aborts the job: the other task's trial is lost with it."""
    from airflow_provider_sparktune.tuning.session import run_tuning

    result = run_tuning(
        SPACE, slow_and_dies_the_first_time, spark=spark, max_evals=6, parallelism=2, seed=0,
        timeout=240, objective_kwargs={"marker_dir": str(tmp_path), "doomed": 2},
    )  # fmt: skip
    assert [r.status for r in result.records] == ["ok"] * 6, [r.error for r in result.records]
    assert (result.trials_failed, result.trials_cancelled) == (0, 0)
    assert 1 <= result.trials_lost <= 2


@pytest.mark.integration
def test_a_lost_trial_goes_to_the_next_task_with_its_trial_id_and_params(spark: Any) -> None:
    from hyperopt import base

    from tests.tuning.test_resident import Channel

    channel = Channel(spark)
    try:
        lost = channel.client()
        lost.send_bytes(b'["ready"]')
        _, tid, params, _ = lost.recv()
        lost.close()  # the task dies mid-trial
        deadline = time.monotonic() + 10
        while channel.dispatcher.lost == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert channel.dispatcher.lost == 1
        assert channel.trial(tid)["state"] == base.JOB_STATE_RUNNING  # still running for the searcher

        again = channel.client()
        again.send_bytes(b'["ready"]')
        _, tid_again, params_again, _ = again.recv()
        assert (tid_again, params_again) == (tid, params)
        again.send_bytes(json.dumps(["ok", tid, {"loss": 0.5, "status": "ok"}, 0.1]).encode())
        assert again.recv()[0] == "trial"  # the next trial is a new one
        assert channel.trial(tid)["state"] == base.JOB_STATE_DONE
        assert channel.trial(tid)["misc"]["sparktune_lost"] == 1
        assert channel.dispatcher.queued == 2  # the re-run counted once toward max_evals
        again.close()
    finally:
        channel.close()


@pytest.mark.integration
def test_a_trial_lost_more_often_than_allowed_fails_saying_how_often_and_what_to_raise(
    spark: Any, tmp_path: Path
) -> None:
    from airflow_provider_sparktune.tuning.session import run_tuning

    result = run_tuning(
        SPACE, always_dies_on_one_point, spark=spark, max_evals=3, parallelism=1, seed=0, timeout=240,
        lost_trial_retries=1, max_failed_trials=None, objective_kwargs={"marker_dir": str(tmp_path)},
    )  # fmt: skip
    failed = [r for r in result.records if r.status == "failed"]
    assert (result.trials_total, result.trials_ok, result.trials_failed, result.trials_lost) == (3, 2, 1, 1)
    assert len(list(tmp_path.glob("attempt-*"))) == 2  # the first attempt and its one re-run
    assert repr(failed[0].params["x"]) == (tmp_path / "doomed").read_text()
    assert failed[0].error is not None
    assert (
        "the Spark task running this trial was lost 2 times (its executor or Python worker died, e.g. "
        "killed by the OOM killer), and lost_trial_retries=1 allows no more re-runs; raise "
        "lost_trial_retries if the cluster loses executors, or give the executors more memory"
    ) in failed[0].error


@pytest.mark.integration
def test_with_no_retries_a_lost_trial_fails_at_once(spark: Any, tmp_path: Path) -> None:
    from airflow_provider_sparktune.tuning.session import run_tuning

    result = run_tuning(
        SPACE, dies_the_first_time, spark=spark, max_evals=3, parallelism=1, seed=0, timeout=240,
        lost_trial_retries=0, max_failed_trials=None,
        objective_kwargs={"marker_dir": str(tmp_path), "doomed": 0},
    )  # fmt: skip
    assert (result.trials_ok, result.trials_failed, result.trials_lost) == (2, 1, 0)
    error = next(r.error for r in result.records if r.status == "failed")
    assert error is not None and "was lost (its executor" in error and "lost_trial_retries=0" in error


@pytest.mark.unit
@pytest.mark.parametrize("value", [-1, 11, 1.5, True, "2"])
def test_lost_trial_retries_out_of_bounds_names_the_field(value: Any) -> None:
    with pytest.raises(TuningConfigError) as raised:
        TuningSpec(lost_trial_retries=value)
    assert str(raised.value) == (
        f"lost_trial_retries: {value!r} must be an integer from 0 to 10 (re-runs of a trial whose Spark "
        "task was lost); use e.g. 2, or 0 to fail such a trial at once"
    )


@pytest.mark.unit
def test_lost_trial_retries_is_a_templated_setting_with_a_default_of_two() -> None:
    from airflow_provider_sparktune.tuning.spec import templated_settings

    assert TuningSpec().lost_trial_retries == 2
    assert templated_settings()["lost_trial_retries"] is int
    assert TuningSpec(lost_trial_retries=0).as_params()["lost_trial_retries"] == 0
    assert json.dumps(TuningSpec(lost_trial_retries=10).as_params()["lost_trial_retries"]) == "10"


@pytest.mark.integration
def test_sparktrials_says_that_it_does_not_run_lost_trials_again(
    spark: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_sparktune.tuning.session import run_tuning

    with caplog.at_level(logging.INFO, logger="airflow_provider_sparktune"):
        result = run_tuning(
            SPACE, lambda p: p["x"], spark=spark, max_evals=2, parallelism=1, seed=0, timeout=120,
            dispatcher="sparktrials",
        )  # fmt: skip
    assert (result.trials_ok, result.trials_lost) == (2, 0)
    assert (
        "dispatcher='sparktrials': a trial whose Spark task is lost fails (only Spark's own task retries, "
        "spark.task.maxFailures, apply); lost_trial_retries=2 applies to dispatcher='resident'"
    ) in caplog.text
