"""The searcher interface: ask a point for a new trial id, hear about running and finished trials.

Dispatchers keep the run's trials as hyperopt trial documents (``tuning/dispatch/trials.py``) and
call a ``suggest`` with hyperopt's signature. :class:`SearcherSuggest` is that call for any
:class:`Searcher`: before each ask it tells the searcher what changed in the documents (trials that
finished or failed, trials it did not propose that are running: warm-start points and resumed
trials), seeds the ask by (seed, trial id), and turns the point into a new document. So resume,
warm start, pruning, MLflow and XCom work the same whichever searcher proposes the points.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_sparktune.tuning.earlier_trials import new_trial_doc
from airflow_provider_sparktune.tuning.trial import LOSSES_KEY, PRUNED_STEP_KEY, losses_in_metrics

Outcome = Literal["ok", "failed", "pruned"]


@dataclass(frozen=True)
class Finished:
    """A finished trial as a searcher hears of it."""

    tid: int
    vals: dict[str, Any]  # {label: value} of the active labels
    outcome: Outcome
    loss: float | None = None
    losses: dict[str, float] = field(default_factory=dict)  # multi-objective runs
    pruned_step: int | None = None


@dataclass(frozen=True)
class History:
    """The run's trial documents: what hyperopt's algorithms read as they are."""

    domain: Any
    trials: Any


class Searcher(ABC):
    """Proposes points; learns from trials as they run and finish."""

    # False: the searcher reads ``History`` at each ask and needs no ``running``/``tell`` calls
    # (hyperopt's algorithms), which spares a pass over every document per trial.
    listens: bool = True

    @abstractmethod
    def ask(self, tid: int, history: History, seed: int) -> dict[str, Any]:
        """The point ``{label: value}`` (active labels only) for new trial ``tid``.

        ``seed`` is derived from the run's seed and ``tid``: the same run asks the same points
        whatever the timing of the trials around it.
        """

    def running(self, tid: int, vals: Mapping[str, Any]) -> None:  # noqa: B027  (optional hook)
        """Trial ``tid``, not proposed by this searcher (a warm-start point), is running."""

    def tell(self, result: Finished) -> None:  # noqa: B027  (optional hook)
        """Trial ``result.tid`` finished, failed or was pruned (also trials of earlier tries)."""


class SearcherSuggest:
    """A :class:`Searcher` behind hyperopt's ``suggest(new_ids, domain, trials, seed)`` signature."""

    def __init__(self, searcher: Searcher, base_seed: int | None, labels: Sequence[str]) -> None:
        self.searcher, self.base_seed, self.labels = searcher, base_seed, tuple(labels)
        self._running: set[int] = set()  # told running (asked or adopted), not yet told finished
        self._told: set[int] = set()

    def __call__(self, new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[Any]:
        if self.searcher.listens:
            self.sync(trials)
        history = History(domain, trials)
        docs: list[Any] = []
        for new_id in new_ids:
            vals = self.searcher.ask(new_id, history, self.trial_seed(new_id, seed))
            self._running.add(new_id)
            docs.append(new_trial_doc(trials, new_id, vals, self.labels))
        return docs

    def trial_seed(self, tid: int, seed: int) -> int:
        """hyperopt's per-trial seeding: (base seed, trial id), or the dispatcher's seed without one."""
        if self.base_seed is None:
            return int(seed)
        import numpy as np

        return int(np.random.SeedSequence([self.base_seed, tid]).generate_state(1)[0])

    def sync(self, trials: Any) -> None:
        """Tell the searcher what changed: finished trials, and running ones it has not seen."""
        from hyperopt import base

        present: set[int] = set()
        for doc in trials.trials:  # the documents in a valid state: new, running, done
            tid = int(doc["tid"])
            present.add(tid)
            if tid in self._told:
                continue
            if doc["state"] == base.JOB_STATE_DONE:
                self._running.discard(tid)
                self._told.add(tid)
                self.searcher.tell(finished_of(doc))
            elif tid not in self._running:
                self._running.add(tid)
                self.searcher.running(tid, doc_vals(doc))
        for tid in sorted(self._running - present):  # failed or cancelled: it left the list
            self._running.discard(tid)
            self._told.add(tid)
            self.searcher.tell(Finished(tid, {}, "failed"))


def doc_vals(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``{label: value}`` of a trial document's active labels, as plain Python numbers."""
    return {label: _plain(v[0]) for label, v in doc["misc"]["vals"].items() if len(v)}


def finished_of(doc: Mapping[str, Any]) -> Finished:
    """A DONE document as a :class:`Finished` (a result without status ok counts as failed)."""
    result = doc.get("result") or {}
    vals = doc_vals(doc)
    tid = int(doc["tid"])
    if result.get("status") != "ok" or result.get("loss") is None:
        return Finished(tid, vals, "failed")
    losses = {str(k): float(v) for k, v in (result.get(LOSSES_KEY) or {}).items()}
    if not losses:  # a trial of an earlier try: its losses came back from MLflow
        losses = losses_in_metrics(result.get("metrics") or {})
    step = result.get(PRUNED_STEP_KEY)
    outcome: Outcome = "pruned" if step is not None else "ok"
    return Finished(tid, vals, outcome, float(result["loss"]), losses, None if step is None else int(step))


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
