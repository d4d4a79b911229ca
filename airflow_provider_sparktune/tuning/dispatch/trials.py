"""The trial documents of a run, kept in a real hyperopt ``SparkTrials`` object.

Over Spark Connect, which SparkTrials cannot use, they are kept in a plain ``hyperopt.Trials``.

Analysis code, hyperopt's algorithms and both dispatchers read the same documents. hyperopt keeps
them, and its cancel flags, in private attributes (``_dynamic_trials``, ``_fmin_cancelled``,
``_fmin_cancelled_reason``): this module is the only one that touches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

# What SparkTrials sets as the cancel reason when its own ``timeout`` fires.
SPARKTRIALS_TIMEOUT_REASON = "fmin run timeout"


class TrialBook:
    """A run's trial documents and cancel state."""

    def __init__(self, spark: Any, parallelism: int, timeout: float | None) -> None:
        from hyperopt import SparkTrials, Trials

        from airflow_provider_sparktune.tuning.dispatch.launch import is_connect

        if is_connect(spark):  # SparkTrials reads spark.sparkContext, which Spark Connect has not
            self.trials: Any = Trials()
        else:
            self.trials = SparkTrials(parallelism=parallelism, timeout=timeout, spark_session=spark)

    def add(self, docs: Sequence[dict[str, Any]]) -> None:
        """Insert new trial documents and make them visible to the algorithms."""
        self.trials.insert_trial_docs(list(docs))
        self.trials.refresh()

    def new_ids(self, n: int) -> list[int]:
        return list(self.trials.new_trial_ids(n))

    def find(self, tid: int) -> dict[str, Any] | None:
        return next((t for t in self.trials._dynamic_trials if t["tid"] == tid), None)

    def finished(self) -> list[dict[str, Any]]:
        """Done, failed and cancelled trial documents, in the order they finished."""
        from hyperopt import base

        states = (base.JOB_STATE_DONE, base.JOB_STATE_ERROR, base.JOB_STATE_CANCEL)
        done = [t for t in list(self.trials._dynamic_trials) if t["state"] in states]
        return sorted(done, key=lambda t: (t.get("refresh_time") or datetime.min, t["tid"]))

    def cancel_open(self, reason: str, *, stamp: bool) -> None:
        """Mark queued and running trials cancelled and tell hyperopt's loop to stop.

        ``stamp``: also record the reason and the time on each document (the resident dispatcher owns
        its documents; SparkTrials' own threads write theirs).
        """
        from hyperopt import base

        self.trials._fmin_cancelled = True
        self.trials._fmin_cancelled_reason = reason
        for trial in list(self.trials._dynamic_trials):
            if trial["state"] in (base.JOB_STATE_NEW, base.JOB_STATE_RUNNING):
                if stamp:  # before the state: the run's watcher reads documents without a lock
                    trial["misc"]["error"] = ("cancelled", reason)
                    trial["refresh_time"] = now()
                trial["state"] = base.JOB_STATE_CANCEL

    @property
    def timed_out(self) -> bool:
        """SparkTrials' own timeout cancelled the run."""
        return bool(self.trials._fmin_cancelled_reason == SPARKTRIALS_TIMEOUT_REASON)


def now() -> Any:
    """hyperopt's timestamp for book and refresh times (naive UTC, millisecond precision)."""
    from hyperopt.utils import coarse_utcnow

    return coarse_utcnow()
