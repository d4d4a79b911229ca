"""The ``trial`` handle an objective can declare: report intermediate losses, ask whether to stop.

It lives on the executor. Each ``report`` is kept as the trial's learning curve (logged to MLflow as
the trial run's ``loss`` metric, one value per step, when the trial finishes). When the run has a
pruner, the resident dispatcher also sends each report to the driver over the trial's connection and
gets the pruner's decision back in the same round trip; ``should_prune()`` then answers from that
decision without another call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from airflow_provider_sparktune.exceptions import ObjectiveError, TrialPruned

# (step, value) -> prune?  Set by the resident task for the trial it is evaluating, when pruning is on.
Decide = Callable[[int, float], bool]
current_decide: ContextVar[Decide | None] = ContextVar("sparktune_decide", default=None)

CURVE_KEY = "sparktune_curve"  # result keys the driver reads back
PRUNED_STEP_KEY = "sparktune_pruned_step"
LOSSES_KEY = "losses"  # a multi-objective result: {loss name: value}
LOSS_METRIC_PREFIX = "loss."  # each named loss is also a metric of its trial: loss.<name>


def losses_in_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The named losses of a trial whose result came back from MLflow, as its ``loss.<name>`` metrics."""
    n = len(LOSS_METRIC_PREFIX)
    return {k[n:]: float(v) for k, v in metrics.items() if k.startswith(LOSS_METRIC_PREFIX)}


class Trial:
    """Passed as ``trial=`` to an objective that declares that parameter."""

    def __init__(self, decide: Decide | None = None) -> None:
        self._decide = decide
        self._prune = False
        self.curve: list[tuple[int, float]] = []

    def report(self, value: float, step: int) -> None:
        """The loss so far (lower is better) at ``step`` (an int that never goes down)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ObjectiveError(f"trial.report: step {step!r} must be a non-negative integer")
        if self.curve and step < self.curve[-1][0]:
            raise ObjectiveError(
                f"trial.report: step {step} comes after step {self.curve[-1][0]}; steps never go down"
            )
        try:
            number = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ObjectiveError(f"trial.report: value {value!r} must be a finite number")
        self.curve.append((step, number))
        if self._decide is not None and not self._prune:
            self._prune = bool(self._decide(step, number))

    def should_prune(self) -> bool:
        """True once the run's pruner decided this trial is hopeless: raise ``TrialPruned`` then."""
        return self._prune


def evaluate_with_trial(call: Callable[[Trial], Any]) -> tuple[Any, Trial, bool]:
    """Run ``call(trial)``; (its result, the trial, whether it raised ``TrialPruned``)."""
    trial = Trial(current_decide.get())
    try:
        return call(trial), trial, False
    except TrialPruned:
        if not trial.curve:
            raise ObjectiveError(
                "the objective raised TrialPruned before any trial.report(value, step); report first"
            ) from None
        return None, trial, True


def pruned_result(trial: Trial) -> dict[str, Any]:
    """A pruned trial's result: its last reported value is its loss, and hyperopt sees it finished."""
    step, value = trial.curve[-1]
    return {"loss": value, "status": "ok", PRUNED_STEP_KEY: step, CURVE_KEY: list(trial.curve)}
