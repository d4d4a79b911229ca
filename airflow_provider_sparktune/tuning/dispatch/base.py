"""The dispatcher interface: how a run's trials get onto Spark, whichever way they travel.

Starting and cancelling Spark work (job groups, Spark Connect tags) is in ``launch``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.algorithms import Suggest
    from airflow_provider_sparktune.tuning.dispatch.trials import TrialBook
    from airflow_provider_sparktune.tuning.pruners import Pruner
    from airflow_provider_sparktune.tuning.records import Progress, TrialRecord
    from airflow_provider_sparktune.tuning.spec import TuningSpec
    from airflow_provider_sparktune.tuning.stopping import StopRules


Ending = Literal["timeout"] | None  # what run() reports: the deadline ended it, or it ran its course


@dataclass(frozen=True)
class DispatchPlan:
    """What a dispatcher needs: where to run, what to evaluate, how much, and when to stop."""

    spark: Any
    book: TrialBook
    objective: Any  # the trial objective: called with concrete params on the executors
    space: Any  # the compiled hyperopt expression
    suggest: Suggest
    spec: TuningSpec  # resolved: no "auto" left
    stops: StopRules
    pruner: Pruner | None  # decides on reports from running trials (resident dispatcher only)
    job_group: str  # every Spark job of the run carries it, so one call cancels them all
    already_queued: int = 0  # trials finished by earlier tries: they count toward max_evals
    already_failed: int = 0  # of those, the failed ones
    # called before a new trial is asked for, outside any lock: waits while the reports of finished
    # trials are behind (a full MLflow write queue), so the dispatcher slows instead of queueing
    pace: Callable[[], None] | None = None


class Dispatcher(ABC):
    """Runs the trials of one run on Spark, writing their documents into ``plan.book``.

    The run's watcher thread reads finished trials from the book and reports them; ``cancel`` may
    be called from that thread at any time, also before ``run``.
    """

    def __init__(self, plan: DispatchPlan) -> None:
        self.plan = plan
        # trial attempts whose Spark task was lost (executor or Python worker gone) and that were run
        # again: infrastructure, not the objective, so counted apart from failed trials
        self.lost = 0

    @abstractmethod
    def run(self, deadline: float | None) -> Ending:
        """Until the budget is spent, a stop rule fires, ``cancel`` is called or ``deadline`` passes.

        ``deadline`` is a ``time.monotonic()`` instant. Returns ``"timeout"`` when the deadline ended
        the run; raises what made the trials impossible to run (Spark, the search algorithm).
        """

    @abstractmethod
    def cancel(self, reason: str) -> None:
        """No new trial starts; running trials are cancelled with the Spark job group."""

    def observe(self, record: TrialRecord, progress: Progress) -> None:  # noqa: B027  (optional hook)
        """Called by the watcher once per newly finished trial. A dispatcher that sees results as they
        arrive applies the stop rules there and needs nothing here."""
