"""Trial records from trial documents: a parameter that fails to evaluate is said in the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_sparktune.tuning.trial_records import record_from_doc

pytestmark = pytest.mark.unit


def doc(tid: int, vals: dict[str, list[Any]]) -> dict[str, Any]:
    from hyperopt import base

    return {
        "tid": tid,
        "state": base.JOB_STATE_DONE,
        "result": {"status": "ok", "loss": 0.5},
        "misc": {"vals": vals},
        "book_time": None,
        "refresh_time": None,
    }


def test_a_parameter_that_fails_to_evaluate_is_a_warning_naming_the_trial(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hyperopt import hp

    space = {"model": hp.choice("model", ["tree", "linear"]), "lr": hp.uniform("lr", 0, 1)}
    with caplog.at_level(logging.WARNING, logger="airflow_provider_sparktune.tuning.trial_records"):
        ok = record_from_doc(doc(1, {"model": [1], "lr": [0.1]}), space)
        assert caplog.records == []
        broken = record_from_doc(doc(7, {"model": [5], "lr": [0.1]}), space)  # a choice the space lacks
    assert ok.params == {"model": "linear", "lr": 0.1}
    assert broken.params == {} and broken.vals == {"model": 5, "lr": 0.1}
    [line] = caplog.records
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith(
        "trial 7: its parameters could not be evaluated from its values {'model': 5, 'lr': 0.1} (IndexError: "
    )
    assert line.getMessage().endswith("it is recorded with no params (its values stay in vals)")
