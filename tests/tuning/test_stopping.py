"""Unit tests for the stop rules both dispatchers apply: failure limit, early stop, loss threshold."""

from __future__ import annotations

import pytest

from airflow_provider_sparktune.tuning.records import TrialRecord, TrialStatus
from airflow_provider_sparktune.tuning.spec import TuningSpec
from airflow_provider_sparktune.tuning.stopping import (
    FAILURE_STOP,
    FailureLimit,
    StopRules,
    failure_stop_message,
    no_success_message,
)


@pytest.mark.unit
def test_failure_limits_count_this_try_and_fire_once() -> None:
    auto = FailureLimit(TuningSpec(max_evals=20, parallelism=2))
    assert [auto.observe(False, remaining=True) for _ in range(4)] == [False, False, True, False]
    assert "the first 3 trials all failed" in (auto.message or "")
    after_success = FailureLimit(TuningSpec(max_evals=20, parallelism=2))
    after_success.observe(True, remaining=True)
    assert not any(
        after_success.observe(False, remaining=True) for _ in range(5)
    )  # auto: only before a success
    ratio = FailureLimit(
        TuningSpec(max_evals=20, parallelism=2, max_failed_trials=None, max_failure_ratio=0.5)
    )
    outcomes = [True, False, True, False, False]
    assert [ratio.observe(ok, remaining=True) for ok in outcomes] == [False] * 4 + [True]
    assert (ratio.message or "").startswith("max_failure_ratio: 3 of 5 finished trials failed")
    last = FailureLimit(TuningSpec(max_evals=3, parallelism=2, max_failed_trials=1))
    assert not last.observe(False, remaining=False)  # nothing left to save: the run ends as usual


@pytest.mark.unit
def test_stop_rules_name_the_rule_that_fired() -> None:
    rules = StopRules(TuningSpec(max_evals=20, parallelism=1, loss_threshold=0.1, early_stop_after=2))
    assert rules.observe(True, 0.5, remaining=True) is None
    assert rules.observe(True, 0.05, remaining=True) == "loss_threshold"
    assert rules.observe(True, 0.3, remaining=True) is None  # one trial without improvement
    assert rules.observe(True, 0.4, remaining=True) == "early_stop"
    assert rules.early_stopped
    assert rules.observe(True, 0.6, remaining=True) is None  # early stop fires once

    failing = StopRules(TuningSpec(max_evals=20, parallelism=1))
    assert [failing.observe(False, None, remaining=True) for _ in range(3)] == [None, None, FAILURE_STOP]
    assert not failing.early_stopped


@pytest.mark.unit
def test_a_run_whose_every_trial_was_pruned_says_so() -> None:
    pruned = TrialRecord(1, "pruned", 0.5, {}, {}, {}, None, 0.0, 1.0, pruned_step=0)
    message = no_success_message((pruned,), "max_evals", TuningSpec(max_evals=1))
    assert message.startswith("every finished trial (1) was pruned, so none has a final loss")


@pytest.mark.unit
def test_the_failure_stop_counts_the_trials_that_ran_apart_from_those_cancelled() -> None:
    def trial(tid: int, status: TrialStatus) -> TrialRecord:
        error = "ValueError: boom" if status == "failed" else None
        return TrialRecord(tid, status, None, {"x": tid}, {}, {}, error, 0.0, 1.0)

    records = tuple(trial(tid, "failed" if tid < 4 else "cancelled") for tid in range(8))
    message = failure_stop_message("max_failed_trials: 3 failed", records, TuningSpec(max_evals=8))
    # hyperopt's SparkTrials had queued all 8 when the limit fired: 4 ran, the other 4 never finished
    assert "stopped after 4 of max_evals=8 trials (4 more cancelled) instead of spending" in message
    assert "First failure, trial 0 with params {'x': 0}:\nValueError: boom" in message
    ran_only = failure_stop_message("max_failed_trials: 3 failed", records[:3], TuningSpec(max_evals=8))
    assert "stopped after 3 of max_evals=8 trials instead of spending" in ran_only
