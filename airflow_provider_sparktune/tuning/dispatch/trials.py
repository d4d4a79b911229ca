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
_OPEN_STATES = (0, 1)  # hyperopt's JOB_STATE_NEW and JOB_STATE_RUNNING: the states that still change


class TrialBook:
    """A run's trial documents and cancel state.

    hyperopt finds a document by scanning its list and ``Trials.refresh`` rebuilds the visible list
    from every document: both cost O(trials so far), paid for each trial, so a 100,000-trial run
    would spend most of its driver time there. The book keeps a tid index and updates the visible
    list with what changed since the last refresh: O(open trials + new trials) each time.
    """

    def __init__(self, spark: Any, parallelism: int, timeout: float | None) -> None:
        """``spark`` None: no Spark, the documents in a plain ``hyperopt.Trials`` (analysis, tests)."""
        from hyperopt import SparkTrials, Trials

        from airflow_provider_sparktune.session_kind import is_connect

        if spark is None or is_connect(spark):  # SparkTrials reads spark.sparkContext, which Connect has not
            self.trials: Any = Trials()
        else:
            self.trials = SparkTrials(parallelism=parallelism, timeout=timeout, spark_session=spark)
        # Each cursor is an index into hyperopt's append-only document list and belongs to one caller:
        # find (the dispatcher), refresh (the dispatcher, under its lock), newly_finished (the watcher).
        self._by_tid: dict[int, dict[str, Any]] = {}
        self._indexed = 0
        self._view: list[dict[str, Any]] | None = None  # the list refresh last gave hyperopt
        self._view_open: list[dict[str, Any]] = []  # documents in it that may still change state
        self._viewed = 0
        self._watch_open: list[dict[str, Any]] = []  # documents the watcher has not seen finish
        self._watched = 0

    def add(self, docs: Sequence[dict[str, Any]]) -> None:
        """Insert new trial documents and make them visible to the algorithms."""
        self.trials.insert_trial_docs(list(docs))
        self.refresh()

    def new_ids(self, n: int) -> list[int]:
        return list(self.trials.new_trial_ids(n))

    def find(self, tid: int) -> dict[str, Any] | None:
        """The document of trial ``tid``: a dict lookup, the index catching up with new documents."""
        docs = self.trials._dynamic_trials
        for doc in docs[self._indexed :]:
            self._by_tid[doc["tid"]] = doc
        self._indexed = len(docs)
        return self._by_tid.get(tid)

    def refresh(self) -> None:
        """What ``Trials.refresh`` does (the documents in a valid state, in insertion order, become
        ``trials.trials``), from the changes since the last call instead of from every document."""
        from hyperopt import base

        trials = self.trials
        if trials._exp_key is not None or self._view is None or trials._trials is not self._view:
            trials.refresh()  # the first time, or after a refresh of hyperopt's own (fmin, a user)
            self._view, self._viewed = trials._trials, len(trials._dynamic_trials)
            self._view_open = [t for t in self._view if t["state"] in _OPEN_STATES]
            return
        view, still_open = self._view, []
        for doc in self._view_open:
            state = doc["state"]
            if state in _OPEN_STATES:
                still_open.append(doc)
            elif state not in base.JOB_VALID_STATES:  # failed or cancelled: it leaves the list
                _remove_from_end(view, doc)
        docs = trials._dynamic_trials
        new = [doc for doc in docs[self._viewed :] if doc["state"] in base.JOB_VALID_STATES]
        self._viewed = len(docs)
        view.extend(new)
        still_open.extend(doc for doc in new if doc["state"] in _OPEN_STATES)
        trials._ids.update(doc["tid"] for doc in new)
        self._view_open = still_open

    def newly_finished(self) -> list[dict[str, Any]]:
        """Done, failed and cancelled trial documents that finished since the last call, in the order
        they finished. Only the documents not yet seen finished are looked at, not the whole history."""
        from hyperopt import base

        states = (base.JOB_STATE_DONE, base.JOB_STATE_ERROR, base.JOB_STATE_CANCEL)
        new = self.trials._dynamic_trials[self._watched :]
        self._watched += len(new)
        candidates = self._watch_open + new
        done = [t for t in candidates if t["state"] in states]
        self._watch_open = [t for t in candidates if t["state"] not in states]
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


def _remove_from_end(docs: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    """Remove ``doc`` (by identity) from ``docs``, looking from the end: a trial that just failed was
    added recently."""
    for i in range(len(docs) - 1, -1, -1):
        if docs[i] is doc:
            del docs[i]
            return


def now() -> Any:
    """hyperopt's timestamp for book and refresh times (naive UTC, millisecond precision)."""
    from hyperopt.utils import coarse_utcnow

    return coarse_utcnow()
