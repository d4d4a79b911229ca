from __future__ import annotations

from typing import Any

import pytest
from hyperopt import Trials

from airflow_provider_sparktune.tuning.earlier_trials import (
    EarlierTrial,
    finished_trial_doc,
    misfit,
    space_labels,
    split_fitting,
)
from airflow_provider_sparktune.tuning.space import build_space

SPACE = {
    "model": {
        "hp": "choice",
        "label": "m",
        "options": [
            {"x": {"hp": "choice", "label": "ax", "options": [1, 2]}},
            {"y": {"hp": "uniform", "label": "by", "low": 0, "high": 1}},
        ],
    },
    "lr": {"hp": "qloguniform", "low": 0.01, "high": 1, "q": 0.01},
    "n": {"hp": "uniformint", "low": 1, "high": 5},
}
FITS = {"m": 0, "ax": 1, "lr": 0.05, "n": 3}


@pytest.mark.unit
def test_labels_of_a_space() -> None:
    assert set(space_labels(build_space(SPACE))) == {"m", "ax", "by", "lr", "n"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("vals", "reason"),
    [
        (FITS, None),
        ({"m": 1, "by": 0.5, "lr": 0.05, "n": 3}, None),
        ({"m": 1, "by": 1.5, "lr": 0.05, "n": 3}, "by=1.5 is outside [0, 1]"),
        ({"m": 2, "lr": 0.05, "n": 3}, "m=2 is outside"),
        ({**FITS, "by": 0.1}, "'by' not active"),
        ({**FITS, "gone": 1}, "'gone' no longer in the search space"),
        ({"m": 0, "lr": 0.05, "n": 3}, "no value for 'ax'"),
        ({**FITS, "lr": 0.055}, "not a multiple of q=0.01"),
        ({**FITS, "n": 7}, "n=7 is outside [1, 5]"),
        ({**FITS, "n": "three"}, "not a finite number"),
    ],
)
def test_a_point_fits_the_space_or_says_why(vals: dict[str, Any], reason: str | None) -> None:
    found = misfit(build_space(SPACE), vals)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


@pytest.mark.unit
def test_split_keeps_fitting_points_in_order() -> None:
    points = [
        EarlierTrial(FITS, "ok", 1.0, "a"),
        EarlierTrial({**FITS, "zz": 1}, "ok", 0.5, "b"),
        EarlierTrial(FITS, "ok", 2, "c"),
    ]
    kept, dropped = split_fitting(build_space(SPACE), points)
    assert [p.source_run_id for p in kept] == ["a", "c"]
    assert [(p.source_run_id, "no longer" in why) for p, why in dropped] == [("b", True)]


@pytest.mark.unit
def test_finished_docs_are_valid_hyperopt_trials_with_inactive_labels_empty() -> None:
    labels = space_labels(build_space(SPACE))
    trials = Trials()
    tids = trials.new_trial_ids(2)
    docs = [
        finished_trial_doc(
            trials, tids[0], EarlierTrial(FITS, "ok", 0.25, "a", metrics={"auc": 0.9}), labels
        ),
        finished_trial_doc(trials, tids[1], EarlierTrial(FITS, "failed", None, "b", error="boom"), labels),
    ]
    trials.insert_trial_docs(docs)
    trials.refresh()
    assert trials.losses() == [0.25]  # ERROR docs are kept out of the history TPE reads, as hyperopt does
    misc = trials.trials[0]["misc"]
    assert misc["vals"] == {"m": [0], "ax": [1], "by": [], "lr": [0.05], "n": [3]}
    assert misc["idxs"]["by"] == [] and misc["idxs"]["ax"] == [0]
    assert trials._dynamic_trials[1]["misc"]["error"] == ("resumed", "boom")
    assert trials.new_trial_ids(1) == [2]
