"""Unit tests for the pruners (Optuna's semantics, minimised losses), their settings and the trial handle."""

from __future__ import annotations

import pytest

from airflow_provider_sparktune.exceptions import ObjectiveError, TrialPruned, TuningConfigError
from airflow_provider_sparktune.tuning.pruners import (
    MedianPruner,
    Reports,
    SuccessiveHalvingPruner,
    make_pruner,
    pruner_from_text,
    pruner_settings,
)
from airflow_provider_sparktune.tuning.spec import TuningSpec
from airflow_provider_sparktune.tuning.trial import Trial, evaluate_with_trial, pruned_result

pytestmark = pytest.mark.unit


def completed(reports: Reports, tid: int, curve: list[float]) -> None:
    for step, value in enumerate(curve):
        reports.add(tid, step, value)
    reports.complete(tid)


def test_median_prunes_a_trial_worse_than_the_median_of_completed_trials_at_that_step() -> None:
    pruner = MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    reports = Reports()
    completed(reports, 0, [1.0, 0.8, 0.6])
    reports.add(9, 0, 5.0)
    assert not pruner.prune(9, 0, reports)  # one completed trial: still starting up
    completed(reports, 1, [1.2, 0.4, 0.2])
    assert not pruner.prune(9, 0, reports)  # step 0 is a warm-up step
    reports.add(9, 1, 0.7)
    assert pruner.prune(9, 1, reports)  # best so far 0.7 > median(0.8, 0.4) = 0.6
    reports.add(8, 1, 0.5)
    assert not pruner.prune(8, 1, reports)  # 0.5 <= 0.6
    reports.add(7, 1, 0.3)
    reports.add(7, 2, 0.9)
    assert not pruner.prune(7, 2, reports)  # its best (0.3) is what counts, below median(0.6, 0.2) = 0.4


def test_median_judges_once_per_interval_and_needs_enough_trials_at_the_step() -> None:
    reports = Reports()
    completed(reports, 0, [1.0, 1.0, 1.0, 1.0])
    reports.add(5, 0, 9.0)
    reports.add(5, 1, 9.0)
    every_other = MedianPruner(n_startup_trials=1, interval_steps=2)
    assert not every_other.prune(5, 1, reports)  # step 1: the interval [0, 2) was judged at step 0
    reports.add(5, 2, 9.0)
    assert every_other.prune(5, 2, reports)
    assert not MedianPruner(n_startup_trials=1, n_min_trials=2).prune(5, 2, reports)  # one trial at step 2


def test_successive_halving_promotes_the_best_of_each_rung() -> None:
    pruner = SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    reports = Reports()
    reports.add(0, 1, 0.5)
    assert not pruner.prune(0, 1, reports)  # first at rung 0 (step 1): promoted
    reports.add(1, 1, 0.9)
    assert pruner.prune(1, 1, reports)  # two at the rung: only the best (index 0) goes on
    reports.add(2, 0, 0.1)
    assert not pruner.prune(2, 0, reports)  # below the first rung: never judged
    reports.add(2, 1, 0.2)
    assert not pruner.prune(2, 1, reports)  # the new best of rung 0
    reports.add(4, 1, 0.3)
    assert pruner.prune(4, 1, reports)  # second of four: only the top 4 // 3 = 1 goes on
    reports.add(0, 3, 0.4)
    assert not pruner.prune(0, 3, reports)  # rung 1 is at step 3: alone there, promoted
    assert reports.rungs == {0: {0: 0.5, 1: 0.9, 2: 0.2, 4: 0.3}, 1: {0: 0.4}}


def test_successive_halving_auto_min_resource_waits_for_a_completed_trial() -> None:
    pruner = SuccessiveHalvingPruner()  # "auto": a hundredth of the first completed trial's steps
    reports = Reports()
    reports.add(1, 0, 9.0)
    assert not pruner.prune(1, 0, reports)
    completed(reports, 0, [1.0] * 300)  # 300 steps: min_resource 2, rungs at 2, 8, 32, ...
    reports.add(1, 1, 9.0)
    assert not pruner.prune(1, 1, reports)
    reports.add(1, 2, 9.0)
    assert not pruner.prune(1, 2, reports)  # first at rung 0
    reports.add(3, 2, 9.5)
    assert pruner.prune(3, 2, reports)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("hyperband", r"^pruner: unknown pruner 'hyperband'; use one of 'median', 'successive_halving'"),
        (3, r"^pruner: 3 is not a pruner; use None, one of"),
        ({"n_startup_trials": 5}, r"^pruner: \{'n_startup_trials': 5\} is not a pruner"),
        (
            {"name": "median", "patience": 2},
            r"^pruner\.patience: not a setting of the median pruner; use n_startup",
        ),
        (
            {"name": "median", "n_warmup_steps": -1},
            r"^pruner\.n_warmup_steps: -1 must be an integer from 0 to 1000000000$",
        ),
        (
            {"name": "successive_halving", "min_early_stopping_rate": 10**9},
            r"^pruner\.min_early_stopping_rate: 1000000000 must be an integer from 0 to 30$",
        ),
        (
            {"name": "successive_halving", "reduction_factor": 10**6},
            r"^pruner\.reduction_factor: 1000000 must",
        ),
        ({"name": "median", "n_startup_trials": 10**12}, r"^pruner\.n_startup_trials: 1000000000000 must"),
        ({"name": "successive_halving", "reduction_factor": 1}, r"^pruner\.reduction_factor: 1 must be"),
        (
            {"name": "successive_halving", "min_resource": "x"},
            r"^pruner\.min_resource: 'x' must be an .* or \"auto\"",
        ),
    ],
)
def test_bad_pruner_settings_fail_with_one_error_naming_pruner(value: object, message: str) -> None:
    with pytest.raises(TuningConfigError, match=message):
        TuningSpec(pruner=value)


def test_the_largest_settings_and_a_huge_step_are_decided_at_once() -> None:
    """A decision runs under the dispatcher's lock: bounded settings and steps keep it short."""
    import time

    settings = {
        "name": "successive_halving",
        "min_resource": 10**9,
        "reduction_factor": 100,
        "min_early_stopping_rate": 30,
        "bootstrap_count": 0,
    }
    pruner = make_pruner(pruner_settings(settings))
    assert pruner is not None
    reports = Reports()
    started = time.perf_counter()
    for tid in range(50):
        reports.add(tid, 10**400, float(tid))
        assert not pruner.prune(tid, 10**400, reports)  # the first rung is beyond any step
    assert time.perf_counter() - started < 0.5
    assert max(reports.values[0]) == 10**9  # steps are kept within the bound


def test_pruner_settings_are_spelled_out_and_sparktrials_is_refused() -> None:
    assert TuningSpec(pruner="median").pruner == {
        "name": "median",
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
        "interval_steps": 1,
        "n_min_trials": 1,
    }
    spec = TuningSpec(pruner={"name": "successive_halving", "min_resource": 1, "reduction_factor": 3})
    assert isinstance(make_pruner(spec.pruner), SuccessiveHalvingPruner)
    assert pruner_settings(None) is None and make_pruner(None) is None
    assert pruner_from_text(' {"name": "median"} ') == {"name": "median"}
    assert pruner_from_text("median") == "median"
    with pytest.raises(TuningConfigError, match=r"^pruner: rendered to text that is not a JSON object"):
        pruner_from_text("{oops")
    with pytest.raises(TuningConfigError, match=r"^pruner: 'median' needs the resident dispatcher"):
        TuningSpec(pruner="median", dispatcher="sparktrials")


def test_trial_reports_are_checked_and_a_decision_is_kept() -> None:
    decisions = iter([False, True])
    trial = Trial(lambda step, value: next(decisions))
    trial.report(0.9, 0)
    assert not trial.should_prune()
    trial.report(0.8, 2)
    assert trial.should_prune()
    trial.report(0.7, 3)  # decided: no further round trip (the iterator is spent)
    assert trial.curve == [(0, 0.9), (2, 0.8), (3, 0.7)]
    with pytest.raises(
        ObjectiveError, match=r"^trial.report: step 1 comes after step 3; steps never go down"
    ):
        trial.report(0.5, 1)
    with pytest.raises(ObjectiveError, match=r"^trial.report: value nan must be a finite number"):
        trial.report(float("nan"), 4)
    with pytest.raises(ObjectiveError, match=r"^trial.report: step -1 must be a non-negative integer"):
        trial.report(0.1, -1)
    assert not Trial().should_prune()  # no pruner: reports are only recorded


def test_a_pruned_objective_ends_with_its_last_report_as_loss() -> None:
    def objective(trial: Trial) -> float:
        trial.report(0.4, 0)
        trial.report(0.3, 5)
        raise TrialPruned()

    result, trial, pruned = evaluate_with_trial(objective)
    assert (result, pruned) == (None, True)
    assert pruned_result(trial) == {
        "loss": 0.3,
        "status": "ok",
        "sparktune_pruned_step": 5,
        "sparktune_curve": [(0, 0.4), (5, 0.3)],
    }

    def pruned_without_report(trial: Trial) -> float:
        raise TrialPruned()

    with pytest.raises(ObjectiveError, match="raised TrialPruned before any trial.report"):
        evaluate_with_trial(pruned_without_report)


def tpe_search(seed: int, prune_every: int) -> tuple[float, float]:
    """(median distance to the optimum of the last 20 points, best distance) of a 50-trial TPE search
    where every ``prune_every``-th trial, wherever it lies, is pruned with a pessimistic early loss."""
    import numpy as np
    from hyperopt import Trials, fmin, hp, tpe

    optimum, count = 0.3, [0]

    def objective(x: float) -> dict[str, object]:
        count[0] += 1
        final = (x - optimum) ** 2
        if not prune_every or count[0] % prune_every:
            return {"loss": final, "status": "ok"}
        trial = Trial()
        trial.report(final + 0.5, 0)
        return pruned_result(trial)

    trials = Trials()
    fmin(
        objective,
        hp.uniform("x", 0, 1),
        tpe.suggest,
        max_evals=50,
        trials=trials,
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
    )
    distances = np.abs(np.array([t["misc"]["vals"]["x"][0] for t in trials.trials]) - optimum)
    return float(np.median(distances[-20:])), float(distances.min())


def test_pruned_trials_do_not_crowd_tpe_out_of_the_good_region() -> None:
    """TPE sees a pruned trial as finished with its partial loss, which is worse than where the trial
    would have ended. With a third of the trials pruned, good region included, TPE still searches
    near the optimum as closely as without pruning."""
    plain = [tpe_search(seed, 0) for seed in range(4)]
    pruned = [tpe_search(seed, 3) for seed in range(4)]
    late_plain = sum(late for late, _ in plain) / 4
    late_pruned = sum(late for late, _ in pruned) / 4
    assert late_pruned < 1.25 * late_plain
    assert max(best for _, best in pruned) < 0.02
