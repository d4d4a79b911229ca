"""Pruning on real Spark: reports travel to the driver's pruner, hopeless trials stop early, MLflow keeps curves."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
import pytest

from airflow_provider_sparktune import TrackingOptions, TrialPruned, run_tuning
from airflow_provider_sparktune.exceptions import TuningCancelledError
from airflow_provider_sparktune.operators.xcom import to_xcom
from airflow_provider_sparktune.tracking.store import open_client
from airflow_provider_sparktune.tuning.run import RunControl
from tests.tuning.test_run import UNIT_SPACE
from tests.tuning.test_session import runs_of

pytestmark = pytest.mark.integration

STEPS = 8
STEP_S = 0.15


def curve_objective(params: dict[str, Any], trial: Any) -> float:
    """A learning curve that ends at x; a bad x is visibly bad from the first step."""
    for step in range(STEPS):
        time.sleep(STEP_S)
        trial.report(params["x"] + (STEPS - step) * 0.05, step)
        if trial.should_prune():
            raise TrialPruned()
    return params["x"]


def test_hopeless_trials_stop_early_and_every_count_agrees(
    spark: Any, mlflow_uri: str, experiment_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    tracking = TrackingOptions(mlflow_uri, experiment_name, run_key="pruned-run")
    with caplog.at_level(logging.INFO, logger="airflow_provider_sparktune.tuning.session"):
        result = run_tuning(
            UNIT_SPACE,
            curve_objective,
            spark=spark,
            tracking=tracking,
            max_evals=14,
            parallelism=2,
            seed=5,
            pruner={"name": "median", "n_startup_trials": 2},
        )
    pruned = [r for r in result.records if r.status == "pruned"]
    ok = [r for r in result.records if r.status == "ok"]
    assert pruned and result.trials_pruned == len(pruned) and len(ok) + len(pruned) == 14
    for record in pruned:
        assert record.pruned_step is not None and record.pruned_step < STEPS - 1
        assert record.curve[-1] == (record.pruned_step, record.loss)
        assert record.eval_s is not None and record.eval_s < min(r.eval_s or 0 for r in ok)  # ended early
    assert all(len(r.curve) == STEPS for r in ok)
    assert result.best_loss == min(r.loss or 0 for r in ok)  # a partial loss is never the best

    assert to_xcom(result)["trials"]["pruned"] == len(pruned)
    lines = [r.getMessage() for r in caplog.records if " pruned at step " in r.getMessage()]
    assert sorted(int(line.split(" pruned at step ")[1].split()[0]) for line in lines) == sorted(
        r.pruned_step for r in pruned if r.pruned_step is not None
    )
    parents, trials = runs_of(mlflow_uri, experiment_name)
    assert parents[0].data.metrics["trials_pruned"] == len(pruned)
    pruned_runs = [t for t in trials if t.data.tags["sparktune.status"] == "pruned"]
    assert len(pruned_runs) == len(pruned) and {t.info.status for t in pruned_runs} == {"FINISHED"}
    client = open_client(mlflow_uri)
    some = pruned_runs[0]
    history = sorted((m.step, m.value) for m in client.get_metric_history(some.info.run_id, "loss"))
    assert len(history) == int(some.data.tags["sparktune.pruned_step"]) + 1  # the learning curve
    assert history[-1][1] == some.data.metrics["loss"]


def test_a_retry_after_a_kill_keeps_pruned_trials_pruned(
    spark: Any, mlflow_uri: str, experiment_name: str
) -> None:
    tracking = TrackingOptions(mlflow_uri, experiment_name, run_key="killed-run")
    settings: dict[str, Any] = {
        "parallelism": 2,
        "seed": 5,
        "pruner": {"name": "median", "n_startup_trials": 2},
    }
    control = RunControl()
    seen: list[Any] = []

    def kill_once_one_was_pruned(record: Any, progress: Any) -> None:
        seen.append(record)
        if any(r.status == "pruned" for r in seen) and len(seen) >= 5:
            control.cancel("killed")

    with pytest.raises(TuningCancelledError):
        run_tuning(
            UNIT_SPACE,
            curve_objective,
            spark=spark,
            tracking=tracking,
            control=control,
            on_trial=kill_once_one_was_pruned,
            max_evals=40,
            **settings,
        )
    killed_pruned = sorted((r.pruned_step, r.loss) for r in seen if r.status == "pruned")
    parents, _ = runs_of(mlflow_uri, experiment_name)
    assert killed_pruned and parents[0].info.status == "KILLED"

    retry = run_tuning(
        UNIT_SPACE, curve_objective, spark=spark, tracking=tracking, max_evals=len(seen) + 1, **settings
    )
    resumed = [r for r in retry.records if r.origin == "resumed"]
    assert sorted((r.pruned_step, r.loss) for r in resumed if r.status == "pruned") == killed_pruned
    assert retry.trials_pruned >= len(killed_pruned)


def test_without_a_pruner_reports_are_a_curve_and_nothing_is_pruned(spark: Any) -> None:
    result = run_tuning(UNIT_SPACE, curve_objective, spark=spark, max_evals=3, parallelism=2, seed=1)
    assert result.trials_pruned == 0
    assert all(len(r.curve) == STEPS and r.curve[-1][0] == STEPS - 1 for r in result.records)


def test_the_built_in_objective_prunes_by_fold(spark: Any) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 4))
    table = pd.DataFrame(features, columns=["a", "b", "c", "d"])
    table["label"] = (features[:, 0] + 0.2 * rng.normal(size=600) > 0).astype(int)
    result = run_tuning(
        {
            "max_depth": {"hp": "choice", "options": [1, 8]},
            "min_samples_leaf": {"hp": "choice", "options": [1, 300]},
        },
        {"estimator": "sklearn.tree.DecisionTreeClassifier", "target": "label", "cv": 5},
        spark=spark,
        data=table,
        max_evals=12,
        parallelism=2,
        seed=2,
        pruner={"name": "median", "n_startup_trials": 2},
    )
    folds = [len(r.curve) for r in result.records]
    assert all(1 <= n <= 5 for n in folds)
    pruned = [r for r in result.records if r.status == "pruned"]
    assert pruned and all(r.pruned_step is not None and r.pruned_step < 4 for r in pruned)
    assert all(r.curve[-1][1] == r.loss for r in result.records)  # the last fold's running mean is the loss
