"""Unit tests for the settings of a run: validation naming the field, "auto" budgets, one source."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.search.names import directions_from_text, options_from_text
from airflow_provider_sparktune.tuning.pruners import pruner_from_text
from airflow_provider_sparktune.tuning.space import space_facts
from airflow_provider_sparktune.tuning.spec import TuningSpec, setting_names, templated_settings
from tests.tuning.test_run import NOTEBOOK_SPACE, UNIT_SPACE


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_evals": 0}, "max_evals"),
        ({"max_evals": "many"}, "max_evals"),
        ({"parallelism": 129}, "parallelism"),
        ({"parallelism": True}, "parallelism"),
        ({"algo": "bayes"}, "algo"),
        ({"seed": -1}, "seed"),
        ({"timeout": 0}, "timeout"),
        ({"loss_threshold": float("nan")}, "loss_threshold"),
        ({"early_stop_after": 0}, "early_stop_after"),
        ({"max_failed_trials": 0}, "max_failed_trials"),
        ({"max_failed_trials": "some"}, "max_failed_trials"),
        ({"max_failure_ratio": 1.5}, "max_failure_ratio"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
def test_bad_settings_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(TuningConfigError, match=rf"^{field}: "):
        TuningSpec(**kwargs)


@pytest.mark.unit
def test_auto_budget_follows_the_seed_guidance() -> None:
    facts = space_facts({**NOTEBOOK_SPACE, "lr": {"hp": "loguniform", "low": 1e-3, "high": 1}})
    resolved = TuningSpec().resolved(facts, task_slots=3)
    assert resolved.max_evals == 20 * 1 + 15 * 17
    assert resolved.parallelism == 3  # 2 x 5 hyperparameters, capped by the 3 task slots
    small = TuningSpec(max_evals=2).resolved(space_facts(UNIT_SPACE), task_slots=64)
    assert small.parallelism == 2  # never more parallel than trials


@pytest.mark.unit
def test_an_unknown_setting_is_refused_with_the_known_ones() -> None:
    with pytest.raises(TuningConfigError, match=r"^max_eval: not a tuning setting; use one of max_evals, "):
        TuningSpec.from_settings({"max_eval": 5})


@pytest.mark.unit
def test_every_setting_is_logged_and_the_templated_ones_convert_from_text() -> None:
    spec = TuningSpec(max_evals=7, parallelism=2, seed=3, max_failure_ratio=0.25)
    assert spec.as_params() == {f.name: getattr(spec, f.name) for f in dataclasses.fields(TuningSpec)}
    assert list(spec.as_params()) == list(setting_names())
    assert templated_settings() == {
        "max_evals": int,
        "parallelism": int,
        "seed": int,
        "timeout": float,
        "loss_threshold": float,
        "early_stop_after": int,
        "max_failed_trials": int,
        "max_failure_ratio": float,
        "lost_trial_retries": int,
        "pruner": pruner_from_text,
        "algo_options": options_from_text,
        "directions": directions_from_text,
    }
    resolved = TuningSpec(max_evals=7, max_failure_ratio=0.25, algo="rand").resolved(
        space_facts(UNIT_SPACE), task_slots=4
    )
    assert (resolved.algo, resolved.max_failure_ratio, resolved.parallelism) == ("rand", 0.25, 2)
