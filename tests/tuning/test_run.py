from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import (
    AllTrialsFailedError,
    ObjectiveError,
    SearchSpaceError,
    TooManyFailedTrialsError,
    TuningCancelledError,
    TuningConfigError,
)
from airflow_provider_sparktune.tuning.earlier_trials import EarlierTrial
from airflow_provider_sparktune.tuning.prepare import prepare_run
from airflow_provider_sparktune.tuning.run import RunControl, execute_run
from airflow_provider_sparktune.tuning.session import run_tuning
from airflow_provider_sparktune.tuning.spec import TuningSpec
from tests.tuning.test_space import NOTEBOOK_SPACE

UNIT_SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}}


def notebook_objective(params: dict[str, Any]) -> float:
    model = params["model"]
    return model["x"] + model.get("y", 0)


def x_objective(params: dict[str, Any]) -> float:
    return params["x"]


def shifted_x(params: dict[str, Any], offset: float) -> float:
    """Today's objective differs from the night the warm-start points were measured on."""
    return params["x"] + offset


def half_second_x(params: dict[str, Any]) -> float:
    time.sleep(0.5)
    return params["x"]


def no_active_jobs(spark: Any, timeout_s: float = 30) -> list[int]:
    """Active job ids once none is left, or whatever is still active after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while spark.sparkContext.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)
    return list(spark.sparkContext.statusTracker().getActiveJobsIds())


def constant_objective(params: dict[str, Any]) -> float:
    return 1.0


def failing_objective(params: dict[str, Any]) -> float:
    raise ValueError("boom 123: the feature table is empty")


def nan_when_high(params: dict[str, Any]) -> float:
    return float("nan") if params["x"] > 0.5 else params["x"]


def spark_inside_objective(params: dict[str, Any]) -> float:
    from pyspark.sql import SparkSession

    return float(SparkSession.builder.getOrCreate().range(3).count())


def first_fast_then_slow(params: dict[str, Any], marker: str) -> float:
    """The first trial to start claims the marker and returns; every other trial sleeps a long time."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(120)
    return params["x"]


def sleeping_objective(params: dict[str, Any]) -> float:
    time.sleep(120)
    return params["x"]


def dies_once(params: dict[str, Any], marker: str) -> float:
    """The first trial to claim the marker kills its Python worker, as a lost executor would."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return params["x"]
    os._exit(3)


class CountingPayload:
    """Appends a line to ``path`` each time it is unpickled: counts deserializations on executors."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_counting_payload, (self.path,))


def _load_counting_payload(path: str) -> CountingPayload:
    with open(path, "a") as marks:
        marks.write(f"{os.getpid()}\n")
    return CountingPayload(path)


def reads_broadcast(params: dict[str, Any], payload: Any) -> float:
    assert type(payload.value).__name__ == "CountingPayload"  # a by-value copy of the class
    return params["x"]


@pytest.fixture(params=["resident", "sparktrials"])
def dispatcher(request: pytest.FixtureRequest) -> str:
    """Both trial dispatchers must honour stops, cancellation and failures the same way."""
    return str(request.param)


# -- budget and argument checks (no Spark) ------------------------------------------------------


@pytest.mark.unit
def test_bad_input_is_refused_before_spark() -> None:
    with pytest.raises(SearchSpaceError, match=r"search_space\.x: low must be < high"):
        prepare_run({"x": {"hp": "uniform", "low": 2, "high": 1}}, x_objective, max_evals=2)
    lock = threading.Lock()
    with pytest.raises(ObjectiveError, match="lock"):
        prepare_run(UNIT_SPACE, lambda params: lock.locked(), max_evals=2)


# -- real Spark runs ----------------------------------------------------------------------------


@pytest.mark.integration
def test_notebook_result_is_reproduced_and_reproducible(spark: Any) -> None:
    runs = [
        run_tuning(NOTEBOOK_SPACE, notebook_objective, spark=spark, max_evals=10, parallelism=3, seed=3)
        for _ in range(2)
    ]
    first, second = runs
    assert first.best_params == {"model": {"name": "model a", "x": 1}}
    assert first.best_loss == 1.0
    assert first.argmin == {"my_choice": 0, "model_a_x": 0}
    assert (first.trials_total, first.trials_ok, first.stopped_reason) == (10, 10, "max_evals")
    assert [r.params for r in first.records] == [r.params for r in second.records]
    # the SparkTrials object stays available for notebook-style analysis
    assert first.trials.count_successful_trials() == 10
    assert len(first.trials.trials) == 10


@pytest.mark.integration
def test_on_trial_sees_every_trial_once_in_plain_types(spark: Any) -> None:
    seen: list[tuple[int, int, float | None]] = []
    result = run_tuning(
        UNIT_SPACE,
        x_objective,
        spark=spark,
        max_evals=4,
        parallelism=2,
        seed=1,
        on_trial=lambda record, progress: seen.append((record.tid, progress.finished, progress.best_loss)),
    )
    assert sorted(tid for tid, _, _ in seen) == [0, 1, 2, 3]
    assert [finished for _, finished, _ in seen] == [1, 2, 3, 4]
    assert seen[-1][2] == pytest.approx(result.best_loss)
    json.dumps([r.to_dict() for r in result.records], allow_nan=False)
    assert all(type(r.params["x"]) is float for r in result.records)


@pytest.mark.integration
def test_early_stop_ends_the_run_without_hanging(spark: Any, dispatcher: str) -> None:
    started = time.monotonic()
    result = run_tuning(
        UNIT_SPACE,
        constant_objective,
        spark=spark,
        max_evals=30,
        parallelism=2,
        early_stop_after=3,
        seed=0,
        dispatcher=dispatcher,
    )
    assert result.stopped_reason == "early_stop"
    assert result.trials_ok < 30
    assert result.best_loss == 1.0
    assert time.monotonic() - started < 120


@pytest.mark.integration
def test_loss_threshold_stops_the_run(spark: Any) -> None:
    result = run_tuning(
        UNIT_SPACE, x_objective, spark=spark, max_evals=40, parallelism=2, loss_threshold=0.6, seed=2
    )
    assert result.stopped_reason == "loss_threshold"
    assert result.best_loss <= 0.6
    assert result.trials_total < 40


@pytest.mark.integration
def test_timeout_cancels_running_trials_and_keeps_finished_ones(
    spark: Any, tmp_path: Path, dispatcher: str
) -> None:
    started = time.monotonic()
    result = run_tuning(
        UNIT_SPACE,
        first_fast_then_slow,
        spark=spark,
        objective_kwargs={"marker": str(tmp_path / "claimed")},
        max_evals=4,
        parallelism=2,
        timeout=25,  # generous: the first Python worker can take seconds to start on a busy machine
        seed=0,
        dispatcher=dispatcher,
    )
    assert result.stopped_reason == "timeout"
    assert result.trials_ok == 1
    assert result.trials_cancelled >= 1
    assert time.monotonic() - started < 100
    assert no_active_jobs(spark) == []


@pytest.mark.integration
def test_cancel_stops_running_and_new_trials(spark: Any, dispatcher: str) -> None:
    control = RunControl()
    timer = threading.Timer(4, control.cancel, args=("killed",))
    timer.start()
    started = time.monotonic()
    with pytest.raises(TuningCancelledError, match="killed"):
        run_tuning(
            UNIT_SPACE,
            sleeping_objective,
            spark=spark,
            max_evals=6,
            parallelism=2,
            control=control,
            dispatcher=dispatcher,
        )
    assert time.monotonic() - started < 30
    assert no_active_jobs(spark) == []


@pytest.mark.integration
def test_all_trials_failing_shows_the_first_traceback(spark: Any, dispatcher: str) -> None:
    with pytest.raises(AllTrialsFailedError) as caught:
        run_tuning(
            UNIT_SPACE, failing_objective, spark=spark, max_evals=3, parallelism=2, dispatcher=dispatcher
        )
    message = str(caught.value)
    assert "all 3 trials failed" in message
    assert "boom 123: the feature table is empty" in message
    assert "Traceback" in message
    assert "There are no evaluation tasks" not in message


@pytest.mark.integration
def test_nan_loss_fails_that_trial_only(spark: Any) -> None:
    result = run_tuning(UNIT_SPACE, nan_when_high, spark=spark, max_evals=8, parallelism=2, seed=5)
    failed = [r for r in result.records if r.status == "failed"]
    assert failed, "seed 5 draws some x > 0.5"
    assert all("loss=nan" in (r.error or "") for r in failed)
    assert result.trials_ok + result.trials_failed == 8
    assert result.best_loss <= 0.5


@pytest.mark.integration
def test_spark_inside_the_objective_is_explained(spark: Any) -> None:
    with pytest.raises(AllTrialsFailedError, match="nested parallelism"):
        run_tuning(UNIT_SPACE, spark_inside_objective, spark=spark, max_evals=2, parallelism=2)


@pytest.mark.integration
def test_notebook_result_with_raw_sparktrials_dispatch(spark: Any) -> None:
    result = run_tuning(
        NOTEBOOK_SPACE,
        notebook_objective,
        spark=spark,
        max_evals=10,
        parallelism=3,
        seed=3,
        dispatcher="sparktrials",
    )
    assert result.best_params == {"model": {"name": "model a", "x": 1}}
    assert result.spec.dispatcher == "sparktrials"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("dispatcher", "expected"), [("resident", "at most one per task"), ("sparktrials", "one per trial")]
)
def test_broadcast_is_deserialized_once_per_python_worker(
    spark: Any, tmp_path: Path, dispatcher: str, expected: str
) -> None:
    marks = tmp_path / "loads.txt"
    payload = spark.sparkContext.broadcast(CountingPayload(str(marks)))
    try:
        result = run_tuning(
            UNIT_SPACE,
            reads_broadcast,
            spark=spark,
            objective_kwargs={"payload": payload},
            max_evals=6,
            parallelism=2,
            seed=0,
            dispatcher=dispatcher,
        )
    finally:
        payload.destroy()
    assert result.trials_ok == 6
    loads = marks.read_text().split()
    if dispatcher == "resident":
        assert 1 <= len(loads) <= 2, loads  # one per resident task (Python worker), not per trial
        assert len(set(loads)) == len(loads)
    else:
        assert len(loads) == 6, loads  # raw SparkTrials starts a fresh Python worker for every trial


@pytest.mark.integration
def test_a_lost_task_runs_its_trial_again_and_the_run_completes(spark: Any, tmp_path: Path) -> None:
    result = run_tuning(
        UNIT_SPACE,
        dies_once,
        spark=spark,
        objective_kwargs={"marker": str(tmp_path / "died")},
        max_evals=6,
        parallelism=2,
        seed=0,
    )
    assert result.trials_total == 6
    assert 1 <= result.trials_lost <= 2  # the dying trial, and the one its failed job took down in local mode
    assert (result.trials_ok, result.trials_failed) == (6, 0), [r.error for r in result.records]


@pytest.mark.integration
def test_efficiency_and_overhead_are_reported(spark: Any) -> None:
    """Efficiency is the objective time over parallelism x wall time of this very run."""
    started = time.monotonic()
    result = run_tuning(UNIT_SPACE, half_second_x, spark=spark, max_evals=4, parallelism=2, seed=0)
    wall = time.monotonic() - started
    eval_s = [r.eval_s for r in result.records]
    assert all(e is not None and 0.5 <= e < result.duration_s for e in eval_s), eval_s  # the 0.5 s sleep
    busy = sum(e for e in eval_s if e is not None)
    assert 0 < result.duration_s <= wall
    assert result.efficiency == pytest.approx(busy / (2 * result.duration_s))
    assert result.efficiency >= 4 * 0.5 / (2 * wall)  # at least the measured sleeps over the measured wall
    assert result.trial_overhead_s == pytest.approx((2 * result.duration_s - busy) / 4)


def data_objective(params: dict[str, Any], data: Any = None) -> float:
    return params["x"] + float(data.value["y"].mean())


@pytest.mark.unit
def test_a_staging_plan_becomes_the_handle_objectives_read(tmp_path: Path) -> None:
    import pandas as pd

    from airflow_provider_sparktune.data.staged import StagedData
    from airflow_provider_sparktune.data.staging import plan_dataset

    pd.DataFrame({"y": [1.0, 2.0]}).to_parquet(tmp_path / "f.parquet")
    plan = plan_dataset(str(tmp_path / "f.parquet"))
    prepared = prepare_run(UNIT_SPACE, data_objective, data=plan, max_evals=2)
    assert isinstance(prepared.objective.data, StagedData)
    assert prepared.objective.data.plan == plan and prepared.objective.data.columns == ("y",)


@pytest.mark.integration
def test_the_drivers_copy_is_removed_even_when_the_run_fails_to_start(spark: Any, tmp_path: Path) -> None:
    import pandas as pd

    from airflow_provider_sparktune.data.staged import StagedData
    from airflow_provider_sparktune.data.staging import plan_dataset
    from airflow_provider_sparktune.tuning.run import execute_run

    pd.DataFrame({"y": [1.0, 2.0]}).to_parquet(tmp_path / "f.parquet")
    data = StagedData.open(plan_dataset(str(tmp_path / "f.parquet")))
    prepared = prepare_run(UNIT_SPACE, data_objective, data=data, max_evals=2)
    seen: list[Any] = []

    def failing_start(spec: Any, facts: Any) -> None:
        seen.append(data._driver_path)
        raise RuntimeError("the tracking store went away")

    with pytest.raises(RuntimeError, match="went away"):
        execute_run(prepared, spark, on_start=failing_start)
    assert seen[0] is not None and os.path.exists(seen[0]) is False  # shipped before the trials, then removed
    assert data.shipped_copy is None


@pytest.mark.integration
def test_resumed_trials_count_toward_max_evals_and_are_not_run_again(spark: Any, dispatcher: str) -> None:
    resume = [
        EarlierTrial({"x": 0.01}, "ok", 0.01, "run-a", metrics={"auc": 0.9}),
        EarlierTrial({"x": 0.9}, "failed", None, "run-b", error="boom"),
        EarlierTrial({"x": 0.5}, "ok", 0.5, "run-c"),
    ]
    evaluated: list[int] = []
    prepared = prepare_run(UNIT_SPACE, x_objective, max_evals=6, parallelism=2, seed=3, dispatcher=dispatcher)
    result = execute_run(
        prepared, spark, resume=resume, on_trial=lambda record, progress: evaluated.append(record.tid)
    )
    assert result.trials_total == 6
    assert sorted(evaluated) == [3, 4, 5]  # only the remaining trials ran and were reported
    assert [r.origin for r in result.records] == ["resumed"] * 3 + ["new"] * 3
    assert [r.source_run_id for r in result.records[:3]] == ["run-a", "run-b", "run-c"]
    assert result.best_loss == 0.01 and result.best_params == {"x": 0.01}  # the best covers earlier tries
    assert result.trials_failed == 1
    assert len(result.trials.trials) == 5  # hyperopt's own view: every ok trial (errors are kept apart)


@pytest.mark.integration
def test_warm_start_points_are_evaluated_first(spark: Any) -> None:
    warm = [EarlierTrial({"x": 0.2}, "ok", 0.2, "best"), EarlierTrial({"x": 0.3}, "ok", 0.3, "second")]
    prepared = prepare_run(
        UNIT_SPACE, shifted_x, objective_kwargs={"offset": 1.0}, max_evals=4, parallelism=1, seed=0
    )
    result = execute_run(prepared, spark, warm_start=warm)
    first = result.records[:2]
    assert [(r.params["x"], r.origin, r.source_run_id) for r in first] == [
        (0.2, "warm_start", "best"),
        (0.3, "warm_start", "second"),
    ]
    # The objective changed since those losses were measured: today's losses, not the copied 0.2 and 0.3.
    assert [r.loss for r in first] == [pytest.approx(1.2), pytest.approx(1.3)]
    assert all(r.eval_s is not None for r in first)  # they ran on an executor
    assert [r.origin for r in result.records[2:]] == ["new", "new"]


@pytest.mark.integration
def test_systematic_failures_stop_the_run_early(spark: Any, dispatcher: str) -> None:
    started = time.monotonic()
    with pytest.raises(TooManyFailedTrialsError) as caught:
        run_tuning(
            UNIT_SPACE, failing_objective, spark=spark, max_evals=8, parallelism=2, dispatcher=dispatcher
        )
    message = str(caught.value)
    assert message.startswith("max_failed_trials: the first 3 trials all failed")
    assert "instead of spending the whole budget" in message
    assert "boom 123: the feature table is empty" in message
    assert "stopped after 8 of" not in message
    assert time.monotonic() - started < 120


# -- Documented promises: "auto" budgets on Spark, failure limits per try, seeds, every algorithm ----

TWO_D_SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}, "y": {"hp": "uniform", "low": 0, "high": 1}}
THREE_D_SPACE = {**TWO_D_SPACE, "z": {"hp": "uniform", "low": 0, "high": 1}}


def xy_objective(params: dict[str, Any]) -> float:
    return float(params["x"] + params["y"])


@pytest.mark.integration
def test_auto_budget_on_spark_is_capped_by_the_task_slots(spark: Any) -> None:
    """Three hyperparameters ask for 2 x 3 = 6 trials at once; the session's local[2] has 2 task slots."""
    budgets: list[TuningSpec] = []
    prepared = prepare_run(THREE_D_SPACE, x_objective, max_evals=4, parallelism="auto", seed=0)
    result = execute_run(prepared, spark, on_start=lambda spec, facts: budgets.append(spec))
    slots = spark.sparkContext.defaultParallelism
    assert slots == 2
    assert [b.parallelism for b in budgets] == [slots]
    assert result.trials_ok == 4
    # max_evals "auto" on a real run: 20 x 1 ordinal hyperparameter, all of them evaluated
    budgets.clear()
    prepared = prepare_run(UNIT_SPACE, x_objective, max_evals="auto", parallelism="auto", seed=0)
    result = execute_run(prepared, spark, on_start=lambda spec, facts: budgets.append(spec))
    assert [(b.max_evals, b.parallelism) for b in budgets] == [(20, 2)]  # 2 x 1 hyperparameter, 2 slots
    assert (result.trials_total, result.trials_ok, result.stopped_reason) == (20, 20, "max_evals")


def fails_first_calls(params: dict[str, Any], marker: str, failures: int) -> float:
    """Fails the first ``failures`` calls of this run (counted in ``marker``), then returns x."""
    import fcntl

    with open(marker, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        calls = len(handle.read().splitlines())
        handle.write("call\n")
    if calls < failures:
        raise ValueError(f"transient failure {calls + 1}")
    return float(params["x"])


@pytest.mark.integration
def test_resumed_failures_do_not_count_toward_this_tries_failure_limit(
    spark: Any, dispatcher: str, tmp_path: Path
) -> None:
    """Four failures resumed from an earlier try plus two in this one: six, past the automatic limit
    of max(3, parallelism) = 3, yet this try has only two and goes on to finish its budget."""
    resume = [EarlierTrial({"x": 0.1 * i}, "failed", None, f"run-{i}", error="boom") for i in range(1, 5)]
    prepared = prepare_run(
        UNIT_SPACE,
        fails_first_calls,
        objective_kwargs={"marker": str(tmp_path / "calls"), "failures": 2},
        max_evals=9,
        parallelism=1,
        seed=1,
        dispatcher=dispatcher,
    )
    result = execute_run(prepared, spark, resume=resume)
    assert result.stopped_reason == "max_evals"
    assert (result.trials_total, result.trials_failed, result.trials_ok) == (9, 6, 3)
    new = [r for r in result.records if r.origin == "new"]
    assert [r.status for r in new] == ["failed", "failed", "ok", "ok", "ok"]


@pytest.mark.integration
def test_seed_gives_the_same_start_up_points_at_any_parallelism(spark: Any, dispatcher: str) -> None:
    """TPE's first 20 suggestions are random start-up points: seeded by (seed, trial id), not by batching."""
    runs = {
        parallelism: run_tuning(
            TWO_D_SPACE,
            xy_objective,
            spark=spark,
            max_evals=6,
            parallelism=parallelism,
            seed=7,
            dispatcher=dispatcher,
        )
        for parallelism in (1, 2)
    }
    points = {p: [r.params for r in sorted(run.records, key=lambda r: r.tid)] for p, run in runs.items()}
    assert len({json.dumps(point, sort_keys=True) for point in points[1]}) == 6
    assert points[1] == points[2]
    other_seed = run_tuning(
        TWO_D_SPACE, xy_objective, spark=spark, max_evals=6, parallelism=2, seed=8, dispatcher=dispatcher
    )
    assert [r.params for r in sorted(other_seed.records, key=lambda r: r.tid)] != points[1]


@pytest.mark.integration
def test_anneal_runs_its_own_search(spark: Any) -> None:
    """anneal and rand draw the same seeded start; anneal then samples around its best points."""
    runs = {
        algo: run_tuning(UNIT_SPACE, x_objective, spark=spark, max_evals=12, parallelism=2, algo=algo, seed=3)
        for algo in ("anneal", "rand")
    }
    anneal = runs["anneal"]
    assert (anneal.trials_ok, anneal.stopped_reason) == (12, "max_evals")
    assert anneal.best_loss == min(r.loss for r in anneal.records if r.loss is not None)
    points = {
        algo: [r.params["x"] for r in sorted(run.records, key=lambda r: r.tid)] for algo, run in runs.items()
    }
    assert points["anneal"] != points["rand"]


@pytest.mark.unit
def test_atpe_without_lightgbm_fails_before_spark_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """hyperopt imports lightgbm only at the first suggestion; the run must not get that far."""
    import sys

    monkeypatch.setitem(sys.modules, "lightgbm", None)  # what a worker without lightgbm has
    with pytest.raises(
        TuningConfigError, match=r"^algo: 'atpe' needs extra packages \(.*lightgbm.*\); install"
    ):
        prepare_run(UNIT_SPACE, x_objective, max_evals=2, algo="atpe")


@pytest.mark.integration
def test_a_failing_search_algorithm_ends_the_resident_run_at_once_with_its_own_error(spark: Any) -> None:
    """An error of ``algo`` inside the dispatcher's serve loop is the run's error, not a lost thread."""
    import dataclasses

    prepared = prepare_run(UNIT_SPACE, x_objective, max_evals=30, parallelism=2, seed=1)
    calls: list[list[int]] = []

    def breaks_on_third_suggestion(new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[Any]:
        calls.append(new_ids)
        if len(calls) >= 3:
            raise RuntimeError("the algorithm broke at its third suggestion")
        return prepared.suggest(new_ids, domain, trials, seed)

    with pytest.raises(RuntimeError, match="^the algorithm broke at its third suggestion$"):
        execute_run(dataclasses.replace(prepared, suggest=breaks_on_third_suggestion), spark)
    assert len(calls) == 3  # no suggestion asked after the failure
    assert no_active_jobs(spark) == []


@pytest.mark.integration
def test_new_trials_wait_for_room_in_a_full_write_queue_and_none_is_lost(spark: Any) -> None:
    """Instant trials against a store that takes 20 ms a write: the dispatcher slows to its pace."""
    from airflow_provider_sparktune.tracking.write_queue import RetryingWriter

    writer = RetryingWriter(max_pending=3)
    written: list[int] = []
    most_queued = 0

    def on_trial(record: Any, progress: Any) -> None:
        nonlocal most_queued
        writer.submit(f"trial {record.tid}", lambda: (time.sleep(0.02), written.append(record.tid)))
        most_queued = max(most_queued, writer.queued)

    result = execute_run(
        prepare_run(UNIT_SPACE, x_objective, max_evals=40, parallelism=2, seed=0),
        spark,
        on_trial=on_trial,
        room=writer.wait_for_room,
    )
    assert writer.close(30) == []
    assert result.trials_ok == 40
    assert sorted(written) == list(range(40))
    assert most_queued <= 3 + 2  # the bound, and the trials that were running when the run waited
