"""Pruners: on the driver, decide from every trial's reports so far whether a running trial should stop.

Semantics follow Optuna's pruners of the same names (``MedianPruner``, ``SuccessiveHalvingPruner``),
for minimised losses. Differences: a trial resumed from an earlier try brings its result but not its
learning curve, so it does not count as a completed trial with intermediate values.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.values import is_int

# Steps and settings are bounded: a pruner decides under the dispatcher's lock, and a setting from run
# conf such as min_early_stopping_rate=10**9 would otherwise make ``reduction_factor ** rung`` a
# number of gigabytes, stalling every trial of the run.
MAX_STEP = 10**9


@dataclass
class Reports:
    """Every trial's reported values by step, and which trials completed (not pruned, not failed)."""

    values: dict[int, dict[int, float]] = field(default_factory=dict)
    completed: set[int] = field(default_factory=set)
    rungs: dict[int, dict[int, float]] = field(
        default_factory=dict
    )  # successive halving: rung -> tid -> value

    def add(self, tid: int, step: int, value: float) -> None:
        self.values.setdefault(tid, {})[min(step, MAX_STEP)] = value

    def complete(self, tid: int) -> None:
        if self.values.get(tid):
            self.completed.add(tid)


def _setting(default: Any, low: int, high: int) -> Any:
    """A pruner setting: its default and the integer range a DAG or run conf may set it to."""
    return field(default=default, metadata={"low": low, "high": high})


class _Settings:
    """Each pruner's settings are its dataclass fields: the defaults, the bounds and the check live here."""

    name: ClassVar[str]

    def __post_init__(self) -> None:
        for setting in fields(self):  # type: ignore[arg-type]
            value = getattr(self, setting.name)
            if setting.name == "min_resource" and value == "auto":
                continue
            low, high = setting.metadata["low"], setting.metadata["high"]
            if not is_int(value) or not low <= value <= high:
                raise TuningConfigError(
                    f"pruner.{setting.name}: {value!r} must be an integer from {low} to {high}"
                    + (' or "auto"' if setting.name == "min_resource" else "")
                )

    def settings(self) -> dict[str, Any]:
        """``{"name": ..., every setting}``: what the spec holds and MLflow logs."""
        return {"name": self.name, **{s.name: getattr(self, s.name) for s in fields(self)}}  # type: ignore[arg-type]


@dataclass(frozen=True)
class MedianPruner(_Settings):
    """Prune when the trial's best value so far is worse than the median of completed trials at this step."""

    name: ClassVar[str] = "median"
    n_startup_trials: int = _setting(5, 0, 1_000_000)
    n_warmup_steps: int = _setting(0, 0, MAX_STEP)
    interval_steps: int = _setting(1, 1, MAX_STEP)
    n_min_trials: int = _setting(1, 1, 1_000_000)

    def prune(self, tid: int, step: int, reports: Reports) -> bool:
        import numpy as np

        step = min(step, MAX_STEP)
        own = reports.values.get(tid, {})
        if math.isnan(own.get(step, math.nan)):
            return True
        if len(reports.completed) < self.n_startup_trials or step < self.n_warmup_steps:
            return False
        if not self._first_in_interval(step, own):
            return False
        others = [reports.values[t][step] for t in reports.completed if step in reports.values[t]]
        if len(others) < self.n_min_trials:
            return False
        return min(own.values()) > float(np.percentile(others, 50))

    def _first_in_interval(self, step: int, own: Mapping[int, float]) -> bool:
        """Optuna's rule: judge at most once per interval, at the first step reported inside it."""
        nearest = (
            step - self.n_warmup_steps
        ) // self.interval_steps * self.interval_steps + self.n_warmup_steps
        before = functools.reduce(lambda last, s: s if last < s != step else last, own, -1)
        return before < nearest


@dataclass(frozen=True)
class SuccessiveHalvingPruner(_Settings):
    """Asynchronous successive halving (ASHA): at each rung, only the best 1/reduction_factor go on."""

    name: ClassVar[str] = "successive_halving"
    min_resource: int | str = _setting("auto", 1, MAX_STEP)  # or "auto"
    reduction_factor: int = _setting(4, 2, 100)
    min_early_stopping_rate: int = _setting(0, 0, 30)
    bootstrap_count: int = _setting(0, 0, 1_000_000)

    def prune(self, tid: int, step: int, reports: Reports) -> bool:
        step = min(step, MAX_STEP)
        value = reports.values[tid][step]
        min_resource = self._min_resource(reports)
        if min_resource is None:
            return False
        rung = sum(tid in at_rung for at_rung in reports.rungs.values())
        while True:
            promotion_step = min_resource * self.reduction_factor ** (self.min_early_stopping_rate + rung)
            if step < promotion_step:
                return False
            if math.isnan(value):
                return True
            at_rung = reports.rungs.setdefault(rung, {})
            at_rung[tid] = value
            competing = sorted(at_rung.values())
            if len(competing) <= self.bootstrap_count:
                return True
            index = max(0, len(competing) // self.reduction_factor - 1)
            if value > competing[index]:
                return True
            rung += 1

    def _min_resource(self, reports: Reports) -> int | None:
        """``"auto"``, as Optuna: a hundredth of the steps of the first completed trial (at least 1)."""
        if self.min_resource != "auto":
            return int(self.min_resource)
        if not reports.completed:
            return None
        first = min(reports.completed)
        return max(max(reports.values[first]) // 100, 1)


Pruner = MedianPruner | SuccessiveHalvingPruner
_PRUNERS: dict[str, type[Pruner]] = {cls.name: cls for cls in (MedianPruner, SuccessiveHalvingPruner)}
PRUNERS = tuple(_PRUNERS)


def pruner_settings(value: Any) -> dict[str, Any] | None:
    """The pruner argument as ``{"name": ..., every setting}``; raises one error naming ``pruner``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise TuningConfigError(
            f"pruner: {value!r} is not a pruner; use None, one of {', '.join(map(repr, PRUNERS))}, or a dict "
            'with "name" and its settings, e.g. {"name": "median", "n_startup_trials": 5}'
        )
    name = value["name"]
    if name not in _PRUNERS:
        raise TuningConfigError(
            f"pruner: unknown pruner {name!r}; use one of {', '.join(map(repr, PRUNERS))}"
        )
    known = [s.name for s in fields(_PRUNERS[name])]
    unknown = sorted(set(value) - {"name"} - set(known))
    if unknown:
        raise TuningConfigError(
            f"pruner.{unknown[0]}: not a setting of the {name} pruner; use {', '.join(known)}"
        )
    return _PRUNERS[name](**{k: v for k, v in value.items() if k != "name"}).settings()


def pruner_from_text(text: str) -> Any:
    """A rendered template: JSON object text, or a pruner's name."""
    text = text.strip()
    if not text.startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TuningConfigError(f"pruner: rendered to text that is not a JSON object ({err.msg})") from None


def make_pruner(settings: Mapping[str, Any] | None) -> Pruner | None:
    if settings is None:
        return None
    return _PRUNERS[settings["name"]](**{k: v for k, v in settings.items() if k != "name"})
