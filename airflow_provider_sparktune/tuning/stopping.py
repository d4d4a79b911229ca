"""The rules that end a run before its budget is spent: loss threshold, early stop, failure limit.

Both dispatchers apply the same :class:`StopRules`; the resident dispatcher as each result arrives,
the SparkTrials dispatcher from the watcher (hyperopt's own loop gives it no earlier moment).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.records import StopReason, TrialRecord
    from airflow_provider_sparktune.tuning.spec import TuningSpec

log = logging.getLogger(__name__)

AUTO_FAILED_TRIALS_MIN = 3  # "auto": stop when this many (or parallelism) trials failed before any succeeded
FAILURE_RATIO_MIN_FINISHED = 5  # max_failure_ratio is judged once this many trials (or parallelism) finished
FAILURE_STOP = "too many failed trials"


class EarlyStop:
    """Stop after ``limit`` finished ok trials in a row that did not improve the best loss."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.best: float | None = None
        self.since_improvement = 0
        self.triggered = False

    def observe(self, loss: float) -> bool:
        """Record one ok result; True exactly once, when the stop condition is first met."""
        if self.best is None or loss < self.best:
            self.best, self.since_improvement = loss, 0
        else:
            self.since_improvement += 1
        if self.triggered or self.since_improvement < self.limit:
            return False
        self.triggered = True
        log.info("early stop: %d finished trials without improving best loss %s", self.limit, self.best)
        return True


class FailureLimit:
    """Stop a run whose objective fails systematically: ``max_failed_trials`` and ``max_failure_ratio``.

    Counts the trials finished in this try only, so a retry after fixing the cause is not stopped by
    the failures it resumed.
    """

    def __init__(self, spec: TuningSpec) -> None:
        self.limit, self.ratio = spec.max_failed_trials, spec.max_failure_ratio
        self.parallelism = int(spec.parallelism) if spec.parallelism != "auto" else 1
        self.ok = self.failed = 0
        self.message: str | None = None

    def observe(self, ok: bool, *, remaining: bool) -> bool:
        """Record one finished trial; True exactly once, when a limit is first reached with trials left."""
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.message is not None or not remaining:
            return False
        finished = self.ok + self.failed
        message = None
        if self.limit == "auto":
            threshold = max(AUTO_FAILED_TRIALS_MIN, self.parallelism)
            if self.ok == 0 and self.failed >= threshold:
                message = (
                    f"max_failed_trials: the first {self.failed} trials all failed (auto: stop after "
                    f"max(3, parallelism) = {threshold} failures before any success)"
                )
        elif self.limit is not None and self.failed >= self.limit:
            message = f"max_failed_trials: {self.failed} trials failed (limit {self.limit})"
        enough = finished >= max(FAILURE_RATIO_MIN_FINISHED, self.parallelism)
        if message is None and self.ratio is not None and enough and self.failed / finished > self.ratio:
            message = (
                f"max_failure_ratio: {self.failed} of {finished} finished trials failed "
                f"({self.failed / finished:.0%} > {self.ratio:.0%})"
            )
        if message is None:
            return False
        self.message = message
        log.error("%s; no new trial starts", message)
        return True


class StopRules:
    """Loss threshold, early stop and failure limit of one run, fed one finished trial at a time."""

    def __init__(self, spec: TuningSpec) -> None:
        self.loss_threshold = spec.loss_threshold
        self.early_stop = EarlyStop(spec.early_stop_after) if spec.early_stop_after else None
        self.failure_limit = FailureLimit(spec)

    def observe(self, ok: bool, loss: float | None, *, remaining: bool) -> str | None:
        """Record one finished (not cancelled) trial; the reason to start no new trial, if one applies now.

        ``"loss_threshold"`` for every result at or below it; ``"early_stop"`` and :data:`FAILURE_STOP`
        once, when first reached.
        """
        reason: str | None = None
        if ok and loss is not None:
            if self.loss_threshold is not None and loss <= self.loss_threshold:
                reason = "loss_threshold"
            if self.early_stop is not None and self.early_stop.observe(loss):
                reason = "early_stop"
        if self.failure_limit.observe(ok, remaining=remaining):
            reason = FAILURE_STOP
        return reason

    @property
    def early_stopped(self) -> bool:
        return self.early_stop is not None and self.early_stop.triggered


def failure_stop_message(stop: str, records: tuple[TrialRecord, ...], spec: TuningSpec) -> str:
    failed = [r for r in records if r.status == "failed" and r.origin != "resumed"]
    first = failed[0]
    cancelled = sum(r.status == "cancelled" for r in records)  # queued or running when the limit fired
    return (
        f"{stop}; stopped after {len(records) - cancelled} of max_evals={spec.max_evals} trials"
        f"{f' ({cancelled} more cancelled)' if cancelled else ''} instead of spending the "
        "whole budget: the objective fails systematically (bad data? a module missing on the executors?). "
        f"Raise max_failed_trials or set it to None to go on regardless. First failure, trial {first.tid} "
        f"with params {first.params}:\n{first.error}"
    )


def no_success_message(records: tuple[TrialRecord, ...], reason: StopReason, spec: TuningSpec) -> str:
    failed = [r for r in records if r.status == "failed"]
    pruned = sum(r.status == "pruned" for r in records)
    if pruned and not failed:
        return (
            f"every finished trial ({pruned}) was pruned, so none has a final loss; the pruner is too "
            "aggressive for this objective: raise its n_startup_trials / n_warmup_steps or min_resource"
        )
    if not failed:
        return (
            f"no trial finished (stopped by {reason}, timeout={spec.timeout}); raise the timeout or "
            "make the objective faster"
        )
    first = failed[0]
    return (
        f"all {len(failed)} trials failed (of {len(records)} finished); the first failure, trial {first.tid} "
        f"with params {first.params}:\n{first.error}"
    )
