"""hyperopt's own SparkTrials loop behind the dispatcher interface: one Spark job per trial.

Kept for comparison and for code that relies on SparkTrials' exact behaviour. Its loop does not show
results as they arrive, so the stop rules run from the watcher (:meth:`observe`) and act by
cancelling, and its timeout is SparkTrials' own (the book was made with ``timeout``).

A trial whose Spark task is lost is not run again here: SparkTrials runs each trial as a Spark job of
its own from a private thread and marks it failed when that job fails, and re-running it would mean
reaching into that thread. Spark's own task retries (``spark.task.maxFailures``, 4 on a cluster, 1 in
local mode) still apply to that one-task job; ``lost_trial_retries`` is the resident dispatcher's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_sparktune.tuning.dispatch.base import Dispatcher, Ending
from airflow_provider_sparktune.tuning.dispatch.launch import cancel_job_group, job_group

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.algorithms import Suggest
    from airflow_provider_sparktune.tuning.records import Progress, TrialRecord

log = logging.getLogger(__name__)


def paced(suggest: Suggest, pace: Callable[[], None]) -> Suggest:
    """``suggest`` that first waits for ``pace``: fmin asks for points from its own loop thread."""

    def suggest_paced(new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[Any]:
        pace()
        return suggest(new_ids, domain, trials, seed)

    return suggest_paced


class SparkTrialsDispatcher(Dispatcher):
    def run(self, deadline: float | None) -> Ending:
        import numpy as np
        from hyperopt import fmin

        plan = self.plan
        if plan.spec.lost_trial_retries:
            log.info(
                "dispatcher='sparktrials': a trial whose Spark task is lost fails (only Spark's own task "
                "retries, spark.task.maxFailures, apply); lost_trial_retries=%d applies to "
                "dispatcher='resident'",
                plan.spec.lost_trial_retries,
            )
        with job_group(plan.spark, plan.job_group, "sparktune trials"):
            fmin(
                fn=plan.objective,
                space=plan.space,
                algo=plan.suggest if plan.pace is None else paced(plan.suggest, plan.pace),
                # fmin counts finished docs except errors toward max_evals; resumed failures count too
                max_evals=int(plan.spec.max_evals) - plan.already_failed,
                trials=plan.book.trials,
                rstate=np.random.default_rng(plan.spec.seed),
                loss_threshold=plan.spec.loss_threshold,
                max_queue_len=plan.spec.parallelism,
                show_progressbar=False,
                return_argmin=False,
            )
        return "timeout" if plan.book.timed_out else None

    def cancel(self, reason: str) -> None:
        """What SparkTrials does on timeout, from outside: stop new trials and cancel the job group."""
        self.plan.book.cancel_open(reason, stamp=False)
        cancel_job_group(self.plan.spark, self.plan.job_group)
        log.info("cancelled the trials of job group %s: %s", self.plan.job_group, reason)

    def observe(self, record: TrialRecord, progress: Progress) -> None:
        if record.status == "cancelled":
            return
        reason = self.plan.stops.observe(
            record.status == "ok", record.loss, remaining=progress.finished < progress.max_evals
        )
        if reason is not None and reason != "loss_threshold":  # fmin stops at the threshold itself
            self.cancel(reason)
