"""The built-in estimator objective: spec checks before any trial, and one real cross-validated trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark import cloudpickle

from airflow_provider_sparktune.data.staged import StagedData
from airflow_provider_sparktune.data.staging import plan_dataset
from airflow_provider_sparktune.exceptions import ObjectiveError
from airflow_provider_sparktune.tuning.estimator import (
    EstimatorObjective,
    cast_whole_floats,
    import_estimator,
    integer_parameters,
    sample_keys,
)
from airflow_provider_sparktune.tuning.objective import build_trial_objective
from airflow_provider_sparktune.tuning.space import build_space

pytestmark = pytest.mark.unit

GBC = "sklearn.ensemble.GradientBoostingClassifier"
SPEC = {
    "estimator": GBC,
    "target": "label",
    "scoring": "roc_auc",
    "cv": 3,
    "fixed_params": {"random_state": 0},
}
SPACE = {
    "n_estimators": {"hp": "quniform", "low": 10, "high": 30, "q": 10},
    "learning_rate": {"hp": "loguniform", "low": 0.05, "high": 0.3},
    "max_depth": {"hp": "choice", "options": [2, 3]},
}


def classification_frame(rows: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))
    return pd.DataFrame(
        {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": (x[:, 0] + x[:, 1] > 0).astype(int)}
    )


@pytest.fixture
def staged(tmp_path: Path) -> StagedData:
    classification_frame().to_parquet(tmp_path / "train.parquet")
    return StagedData.open(plan_dataset(str(tmp_path / "train.parquet")))


def test_the_dag_argument_spec_becomes_a_checked_trial_objective(staged: StagedData) -> None:
    trial = build_trial_objective(SPEC, data=staged, space=build_space(SPACE))
    assert isinstance(trial.fn, EstimatorObjective)
    assert trial.fn.cv == 3 and trial.fn.fixed_params == {"random_state": 0}
    copy = cloudpickle.loads(cloudpickle.dumps(trial))  # travels to executors
    assert isinstance(copy.fn, EstimatorObjective) and copy.fn is not trial.fn
    assert (copy.fn.cv, copy.fn.fixed_params, copy.fn.target) == (3, {"random_state": 0}, trial.fn.target)
    assert copy.data.plan == staged.plan
    point = {"n_estimators": 20.0, "learning_rate": 0.1, "max_depth": 2}
    assert copy(point)["loss"] == pytest.approx(trial(point)["loss"])  # the copy scores as the original


def test_one_trial_cross_validates_and_reports_metrics() -> None:
    objective = EstimatorObjective.from_spec(SPEC)
    frame = classification_frame()
    result = objective({"n_estimators": 20.0, "learning_rate": 0.1, "max_depth": 2}, data=frame)
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import cross_val_score

    expected = cross_val_score(
        GradientBoostingClassifier(n_estimators=20, learning_rate=0.1, max_depth=2, random_state=0),
        frame[["a", "b", "c"]],
        frame["label"],
        scoring="roc_auc",
        cv=3,
    )
    assert result["loss"] == pytest.approx(-expected.mean())
    assert result["metrics"]["cv_score_mean"] == pytest.approx(expected.mean())
    assert result["metrics"]["cv_score_std"] == pytest.approx(expected.std())
    assert result["metrics"]["fit_time_s"] > 0
    assert result["status"] == "ok"


def test_npz_with_named_arrays(tmp_path: Path) -> None:
    frame = classification_frame()
    np.savez(tmp_path / "xy.npz", X=frame[["a", "b", "c"]].to_numpy(), y=frame["label"].to_numpy())
    staged = StagedData.open(plan_dataset(str(tmp_path / "xy.npz")))
    objective = EstimatorObjective.from_spec({"estimator": GBC, "target": "y", "cv": 2})
    objective.check(staged)
    assert objective({"n_estimators": 5}, data=np.load(tmp_path / "xy.npz"))["loss"] < -0.5


def test_whole_floats_become_ints_where_the_estimator_takes_ints() -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    ints = integer_parameters(GradientBoostingClassifier)
    assert {"n_estimators", "max_depth", "max_leaf_nodes", "min_samples_leaf"} <= ints
    assert not {"learning_rate", "subsample", "max_features", "random_state"} & ints
    params = {"n_estimators": 50.0, "learning_rate": 1.0, "max_depth": 3.0, "min_samples_leaf": 2.5}
    assert cast_whole_floats(params, ints) == {
        "n_estimators": 50,
        "learning_rate": 1.0,
        "max_depth": 3,
        "min_samples_leaf": 2.5,
    }
    assert type(cast_whole_floats({"n_estimators": np.float64(40.0)}, ints)["n_estimators"]) is int


def test_sample_keys_cover_conditional_branches() -> None:
    space = build_space({"kind": {"hp": "choice", "options": [{"max_depth": 2}, {"max_leaf_nodes": 4}]}})
    assert sample_keys(space) == {"kind"}
    assert sample_keys(build_space(SPACE)) == set(SPACE)


# --------------------------------------------------------------------------------------------------
# everything that can be wrong fails before the trials, naming the field and the fix
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"target": "label"}, ["objective.estimator: required"]),
        ({"estimator": GBC}, ["objective.target: required"]),
        ({**SPEC, "cv": 1}, ["objective.cv: 1 must be an integer number of folds, at least 2"]),
        ({**SPEC, "folds": 3}, ["objective.folds: unknown key", "estimator, target, features, scoring, cv"]),
        ({**SPEC, "fixed_params": [1]}, ["objective.fixed_params: must be a dict"]),
    ],
)
def test_bad_specs(spec: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ObjectiveError) as exc:
        EstimatorObjective.from_spec(spec)
    for fragment in fragments:
        assert fragment in str(exc.value)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("sklearn.ensemble.GradientBoostingClassifer", "objective.estimator: 'sklearn.ensemble' has no"),
        ("no_such_package.Model", "objective.estimator: cannot import 'no_such_package'"),
        ("GradientBoostingClassifier", "is not an import path"),
        ("sklearn.metrics.roc_auc_score", "is not an estimator class with fit()"),
    ],
)
def test_unknown_estimator_paths(path: str, fragment: str) -> None:
    with pytest.raises(ObjectiveError, match="sklearn|scikit-learn|install") as exc:
        import_estimator(path)
    assert fragment in str(exc.value)


def test_colon_import_path() -> None:
    assert (
        import_estimator("sklearn.ensemble:GradientBoostingClassifier").__name__
        == "GradientBoostingClassifier"
    )


def test_missing_target_column_names_the_uri_and_the_columns(staged: StagedData) -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective({**SPEC, "target": "churned"}, data=staged, space=build_space(SPACE))
    message = str(exc.value)
    assert f"objective.target: column 'churned' is not in dataset '{staged.plan.uri}'" in message
    assert "(has: a, b, c, label)" in message and "set target to one of them" in message


def test_a_file_that_is_not_a_dataset_is_not_quoted_by_the_column_check(tmp_path: Path) -> None:
    """A URI from run conf may name any readable file; read as CSV, its first line would be the columns."""
    secret = tmp_path / "token.csv"
    secret.write_text("ghp_sparktuneSecretToken123\nsecond line\n")
    passwd = tmp_path / "passwd.csv"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/sh\n")
    for path, first_line in ((secret, "ghp_sparktuneSecretToken123"), (passwd, "root:x:0:0")):
        data = StagedData.open(plan_dataset(str(path)))
        with pytest.raises(ObjectiveError) as exc:
            build_trial_objective({**SPEC, "target": "churned"}, data=data, space=build_space(SPACE))
        message = str(exc.value)
        assert message.startswith("objective.target: column 'churned' is not in dataset")
        assert "names not shown" in message and first_line not in message


def test_hyperparameters_the_estimator_does_not_accept(staged: StagedData) -> None:
    space = build_space({**SPACE, "depth": {"hp": "choice", "options": [2, 3]}})
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(SPEC, data=staged, space=space)
    message = str(exc.value)
    assert (
        "objective.estimator: GradientBoostingClassifier does not accept the hyperparameter(s) ['depth']"
        in message
    )
    assert "max_depth" in message  # the names it does accept


def test_unknown_scorer(staged: StagedData) -> None:
    with pytest.raises(ObjectiveError, match="objective.scoring: unknown scorer 'auc_roc'; use one of"):
        build_trial_objective({**SPEC, "scoring": "auc_roc"}, data=staged, space=build_space(SPACE))


def test_no_data_is_a_clear_error() -> None:
    with pytest.raises(ObjectiveError, match=r"trains on data, and none was given; pass data="):
        build_trial_objective(SPEC, space=build_space(SPACE))


def test_a_single_npy_array_has_no_named_target(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((10, 3)))
    staged = StagedData.open(plan_dataset(str(tmp_path / "x.npy")))
    with pytest.raises(ObjectiveError, match="single .npy array; the built-in objective needs named columns"):
        build_trial_objective(SPEC, data=staged)


def test_fold_reports_prune_before_the_last_fold_only() -> None:
    """The running mean loss goes to trial.report after each fold; a decision after the last fold is
    moot (the work is done), so the trial then finishes with its full cross-validated loss."""
    from airflow_provider_sparktune.exceptions import TrialPruned
    from airflow_provider_sparktune.tuning.trial import Trial

    objective = EstimatorObjective.from_spec(SPEC)
    params = {"n_estimators": 10.0, "learning_rate": 0.1, "max_depth": 2}
    frame = classification_frame()
    always = Trial(lambda step, value: True)
    with pytest.raises(TrialPruned):
        objective(params, data=frame, trial=always)
    assert [step for step, _ in always.curve] == [0]

    at_the_end = Trial(lambda step, value: step == 2)
    result = objective(params, data=frame, trial=at_the_end)
    assert [step for step, _ in at_the_end.curve] == [0, 1, 2]
    assert at_the_end.curve[-1][1] == pytest.approx(result["loss"])  # the running mean of all folds
