"""The settings of one tuning run, in one place: validation, ``"auto"`` resolution, templating, logging.

Every setting is a field of :class:`TuningSpec`. The field's metadata says how a rendered template's
text converts to it (``text``) and whether the operator templates it (``templated``); the operator
derives its ``template_fields`` and conversions from here, ``prepare_run`` takes the same names as
keyword arguments, and the tracker logs every field as a parent-run param.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.search.names import (
    check_algo,
    check_algo_options,
    check_directions,
    directions_from_text,
    is_optuna,
    options_from_text,
)
from airflow_provider_sparktune.tuning.pruners import pruner_from_text, pruner_settings
from airflow_provider_sparktune.tuning.space import MAX_PARALLELISM, SpaceFacts
from airflow_provider_sparktune.values import is_int, is_number, positive_seconds

DISPATCHERS = ("resident", "sparktrials")
# each re-run waits for Spark to bring a task back: losing one trial's task more often is an outage
MAX_LOST_TRIAL_RETRIES = 10


def _setting(default: Any, text: Callable[[str], Any] = str, *, templated: bool = True) -> Any:
    return field(default=default, metadata={"text": text, "templated": templated})


@dataclass(frozen=True)
class TuningSpec:
    """Validated budget and search settings of one run."""

    max_evals: int | Literal["auto"] = _setting("auto", int)
    parallelism: int | Literal["auto"] = _setting("auto", int)
    algo: str = _setting("tpe", templated=False)
    seed: int | None = _setting(None, int)
    timeout: float | None = _setting(None, float)
    loss_threshold: float | None = _setting(None, float)
    early_stop_after: int | None = _setting(None, int)
    dispatcher: str = _setting("resident", templated=False)
    max_failed_trials: int | Literal["auto"] | None = _setting("auto", int)
    max_failure_ratio: float | None = _setting(None, float)
    # re-runs of a trial whose Spark task was lost (executor or Python worker killed): not its failure
    lost_trial_retries: int = _setting(2, int)
    pruner: Any = _setting(None, pruner_from_text)  # None, a pruner's name, or {"name": ..., settings}
    algo_options: Any = _setting(None, options_from_text)  # an Optuna sampler's keyword arguments
    directions: Any = _setting(None, directions_from_text)  # {loss name: direction}: a multi-objective run

    def __post_init__(self) -> None:
        check_count("max_evals", self.max_evals, allow_auto=True)
        check_count("parallelism", self.parallelism, allow_auto=True, upper=MAX_PARALLELISM)
        check_algo(self.algo)
        options = (
            options_from_text(self.algo_options) if isinstance(self.algo_options, str) else self.algo_options
        )
        object.__setattr__(self, "algo_options", check_algo_options(self.algo, options))
        directions = (
            directions_from_text(self.directions) if isinstance(self.directions, str) else self.directions
        )
        object.__setattr__(self, "directions", check_directions(directions))
        if self.seed is not None and (not is_int(self.seed) or self.seed < 0):
            raise TuningConfigError(f"seed: {self.seed!r} must be a non-negative integer or None")
        if self.timeout is not None:
            positive_seconds("timeout", self.timeout)
        if self.loss_threshold is not None and not is_number(self.loss_threshold):
            raise TuningConfigError(
                f"loss_threshold: {self.loss_threshold!r} must be a finite number or None"
            )
        if self.early_stop_after is not None:
            check_count("early_stop_after", self.early_stop_after)
        if self.dispatcher not in DISPATCHERS:
            raise TuningConfigError(
                f"dispatcher: unknown dispatcher {self.dispatcher!r}; use one of {', '.join(DISPATCHERS)}"
            )
        if self.max_failed_trials is not None:
            check_count("max_failed_trials", self.max_failed_trials, allow_auto=True)
        ratio = self.max_failure_ratio
        if ratio is not None and (not is_number(ratio) or not 0 < ratio < 1):
            raise TuningConfigError(
                f"max_failure_ratio: {ratio!r} must be a number between 0 and 1 (exclusive) or None"
            )
        retries = self.lost_trial_retries
        if not is_int(retries) or not 0 <= retries <= MAX_LOST_TRIAL_RETRIES:
            raise TuningConfigError(
                f"lost_trial_retries: {retries!r} must be an integer from 0 to {MAX_LOST_TRIAL_RETRIES} "
                "(re-runs of a trial whose Spark task was lost); use e.g. 2, or 0 to fail such a trial at once"
            )
        object.__setattr__(self, "pruner", pruner_settings(self.pruner))  # every setting spelled out
        self._check_search()
        if self.pruner is not None and self.dispatcher != "resident":
            raise TuningConfigError(
                f"pruner: {self.pruner['name']!r} needs the resident dispatcher, which talks to running "
                f"trials; dispatcher={self.dispatcher!r} cannot. Use dispatcher='resident' or pruner=None"
            )

    def _check_search(self) -> None:
        """Combinations of searcher, dispatcher, pruner and objectives that cannot work."""
        if is_optuna(self.algo) and self.dispatcher == "sparktrials":
            raise TuningConfigError(
                f"dispatcher: 'sparktrials' runs hyperopt's own fmin loop, which cannot ask Optuna's "
                f"samplers; with algo={self.algo!r} use dispatcher='resident' (the default), or choose a "
                "hyperopt algo (tpe, rand, anneal, atpe)"
            )
        if self.directions is None:
            return
        if self.pruner is not None:
            raise TuningConfigError(
                "pruner: a run with several objectives (directions) cannot be pruned: a trial reports one "
                "value, and no single value ranks trials on a Pareto front; set pruner=None or use one loss"
            )
        if self.algo == "optuna.cmaes":
            raise TuningConfigError(
                "algo: 'optuna.cmaes' optimizes one loss; with directions use 'optuna.tpe', 'optuna.nsga2' "
                "or 'optuna.gp'"
            )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TuningSpec:
        """A spec from keyword settings; an unknown name is refused with the list of known ones."""
        unknown = sorted(set(settings) - set(setting_names()))
        if unknown:
            raise TuningConfigError(
                f"{unknown[0]}: not a tuning setting; use one of {', '.join(setting_names())}"
            )
        return cls(**settings)

    def resolved(self, facts: SpaceFacts, task_slots: int | Callable[[], int]) -> TuningSpec:
        """The same spec with ``"auto"`` budgets replaced by the original notebook's guidance.

        ``task_slots`` may be a call, made only for ``parallelism="auto"`` (over Spark Connect, reading
        the cluster's slots takes a small job).
        """
        max_evals = facts.suggested_max_evals() if self.max_evals == "auto" else self.max_evals
        parallelism = self.parallelism
        if parallelism == "auto":
            slots = task_slots() if callable(task_slots) else task_slots
            parallelism = min(facts.suggested_parallelism(slots), int(max_evals))
        return dataclasses.replace(self, max_evals=int(max_evals), parallelism=int(parallelism))

    def as_params(self) -> dict[str, Any]:
        """Every setting by name: the parent run's params."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def setting_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TuningSpec))


def templated_settings() -> dict[str, Callable[[str], Any]]:
    """The settings an operator renders as templates, with the type their text converts to."""
    return {f.name: f.metadata["text"] for f in dataclasses.fields(TuningSpec) if f.metadata["templated"]}


def check_count(name: str, value: Any, *, allow_auto: bool = False, upper: int | None = None) -> None:
    if allow_auto and value == "auto":
        return
    hint = ' or "auto"' if allow_auto else ""
    if not is_int(value) or value < 1:
        raise TuningConfigError(f"{name}: {value!r} must be a positive integer{hint}")
    if upper is not None and value > upper:
        raise TuningConfigError(f"{name}: {value} is above SparkTrials' cap of {upper}; use at most {upper}")
