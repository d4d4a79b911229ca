"""One tuning run on a SparkSession: dispatch and watching, once ``prepare_run`` has checked the input.

``execute_run`` resolves the ``"auto"`` budget against the cluster, attaches staged data and runs
the trials through a dispatcher (see ``tuning.dispatch``):

* a watcher thread on the driver reports each finished trial (task log, MLflow) as it lands and
  carries out cancellation. Early stopping never goes through hyperopt's ``early_stop_fn``, whose
  SparkTrials path can crash the dispatcher thread and hang ``fmin``;
* the dispatcher runs in a worker thread, so a task timeout or SIGTERM landing in the main thread
  cancels the Spark job group first instead of waiting in thread joins for running trials;
* suggestions are seeded per trial id, so ``seed`` reproduces the same points however the trials
  were batched by timing (adaptive TPE rounds still depend on which trials had finished);
* trials of earlier runs come in two ways: ``resume`` (finished trials of an earlier try, loaded as
  done so that TPE learns from them and ``max_evals`` counts them) and ``warm_start`` (the best points
  of earlier runs, evaluated again first).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_sparktune.exceptions import (
    AllTrialsFailedError,
    TooManyFailedTrialsError,
    TuningCancelledError,
)
from airflow_provider_sparktune.tracking.history import EarlierTrial
from airflow_provider_sparktune.tuning.algorithms import Suggest, WarmStartSuggest
from airflow_provider_sparktune.tuning.dispatch import make_dispatcher
from airflow_provider_sparktune.tuning.dispatch.base import Dispatcher, DispatchPlan, Ending
from airflow_provider_sparktune.tuning.dispatch.launch import task_slots
from airflow_provider_sparktune.tuning.dispatch.trials import TrialBook
from airflow_provider_sparktune.tuning.earlier_trials import finished_trial_doc, space_labels
from airflow_provider_sparktune.tuning.prepare import PreparedRun
from airflow_provider_sparktune.tuning.pruners import make_pruner
from airflow_provider_sparktune.tuning.records import (
    Progress,
    StopReason,
    TrialCallback,
    TrialRecord,
    TuningResult,
    efficiency,
)
from airflow_provider_sparktune.tuning.space import SpaceFacts
from airflow_provider_sparktune.tuning.spec import TuningSpec
from airflow_provider_sparktune.tuning.stopping import StopRules, failure_stop_message, no_success_message
from airflow_provider_sparktune.tuning.trial_records import record_from_doc, record_from_earlier

log = logging.getLogger(__name__)


class RunControl:
    """Cancel a run from any thread, including a signal handler: only sets a flag the watcher acts on."""

    def __init__(self) -> None:
        self.job_group = f"sparktune-{uuid.uuid4().hex[:12]}"
        self._requested = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str = "killed") -> None:
        if not self._requested.is_set():
            self.reason = reason
            self._requested.set()

    @property
    def cancel_requested(self) -> bool:
        return self._requested.is_set()


def execute_run(
    prepared: PreparedRun,
    spark: Any,
    *,
    on_trial: TrialCallback | None = None,
    control: RunControl | None = None,
    on_start: Callable[[TuningSpec, SpaceFacts], None] | None = None,
    resume: Sequence[EarlierTrial] = (),
    warm_start: Sequence[EarlierTrial] = (),
    started_at: float | None = None,
    room: Callable[[float, int], bool] | None = None,
) -> TuningResult:
    """Run a prepared tuning on ``spark``; ``on_start`` sees the budget once "auto" is resolved.

    Staged data is attached first (broadcast mode reads it and ships the host copy, or falls back to reload)
    so ``on_start`` sees the final plan, and the driver's copy is removed however the run ends.
    ``resume``: finished trials of an earlier try; they count toward ``max_evals`` and are not run
    again. ``warm_start``: points evaluated first, before ``algo`` is asked. Both must fit the space
    (see :func:`earlier_trials.split_fitting`). ``started_at``: the epoch time ``startup_s`` counts from
    (default: now). ``room(timeout_s, coming)``: back-pressure from what ``on_trial`` feeds (a
    bounded write queue): waits up to ``timeout_s`` for room to report ``coming`` more trials (those
    started and not reported yet), True when there is; no new trial starts until there is.
    """
    started_at = time.time() if started_at is None else started_at
    spec = prepared.spec.resolved(prepared.facts, task_slots=lambda: task_slots(spark))
    staged = prepared.staged
    try:
        if staged is not None:
            staged.attach(spark)
        if on_start is not None:
            on_start(spec, prepared.facts)
        run = TuningRun(
            spark, prepared, spec, on_trial, control or RunControl(), started_at=started_at, room=room
        )
        run.preload(resume, warm_start)
        return run.execute()
    finally:
        if staged is not None:
            staged.release()


class TuningRun:
    """One run: a dispatch thread, a watcher thread, and the state they share."""

    POLL_S = 0.2
    PACE_S = 0.05  # how often a trial waiting for room looks again at what is not reported yet
    # After a kill's cancel, how long to let the dispatcher end cleanly before the result is made
    # without it: under a scheduler the task has 5 s between SIGTERM and SIGKILL to close its runs,
    # and cancelled Spark tasks can take longer than that to end.
    CANCEL_GRACE_S = 0.5

    def __init__(
        self,
        spark: Any,
        prepared: PreparedRun,
        spec: TuningSpec,
        on_trial: TrialCallback | None,
        control: RunControl,
        *,
        started_at: float | None = None,
        room: Callable[[float, int], bool] | None = None,
    ) -> None:
        self.spark, self.space, self.objective = spark, prepared.space, prepared.objective
        self.suggest: Suggest = prepared.suggest
        self.spec, self.on_trial, self.control = spec, on_trial, control
        self.book = TrialBook(spark, int(spec.parallelism), spec.timeout)
        self.stops = StopRules(spec)
        self.records: dict[int, TrialRecord] = {}
        self.best_loss: float | None = None
        self.dispatch_error: BaseException | None = None
        self.ending: Ending = None
        self.dispatched = threading.Event()  # the dispatcher returned (or raised)
        self.cancel_issued = threading.Event()  # the watcher has cancelled the trials of a kill
        self.dispatcher: Dispatcher | None = None
        self.started = time.monotonic()
        self.started_at = time.time() if started_at is None else started_at
        self.preloaded = 0
        self.preloaded_failed = 0
        self.warm: WarmStartSuggest | None = None
        self.room = room
        self.paced_s = 0.0  # time new trials waited for room to report them
        self.paced_trials = 0  # trials the dispatcher started after asking for room
        self._pace_lock = threading.Lock()

    def preload(self, resume: Sequence[EarlierTrial], warm_start: Sequence[EarlierTrial]) -> None:
        """Finished trials of an earlier try as done trial docs; warm-start points queued first."""
        if not resume and not warm_start:
            return
        labels = space_labels(self.space)
        if resume:
            tids = self.book.new_ids(len(resume))
            self.book.add(
                [
                    finished_trial_doc(self.book.trials, tid, earlier, labels)
                    for tid, earlier in zip(tids, resume, strict=True)
                ]
            )
            for tid, earlier in zip(tids, resume, strict=True):
                record = record_from_earlier(
                    tid, earlier, self.space, named_losses=bool(self.spec.directions)
                )
                self.records[tid] = record
                self._update_best(record)
            self.preloaded = len(resume)
            self.preloaded_failed = sum(earlier.status != "ok" for earlier in resume)
            log.info(
                "resumed %d finished trial(s) of earlier tries (%d failed); %d left to run",
                self.preloaded,
                self.preloaded_failed,
                max(0, int(self.spec.max_evals) - self.preloaded),
            )
        if warm_start:
            self.warm = WarmStartSuggest(warm_start, labels, self.suggest)
            self.suggest = self.warm

    def execute(self) -> TuningResult:
        self.dispatcher = make_dispatcher(
            DispatchPlan(
                spark=self.spark,
                book=self.book,
                objective=self.objective,
                space=self.space,
                suggest=self.suggest,
                spec=self.spec,
                stops=self.stops,
                pruner=make_pruner(self.spec.pruner),
                job_group=self.control.job_group,
                already_queued=self.preloaded,
                already_failed=self.preloaded_failed,
                pace=None if self.room is None else self._pace,
            )
        )
        watcher = threading.Thread(target=self._watch, name="sparktune-watcher", daemon=True)
        runner = threading.Thread(target=self._dispatch, name="sparktune-dispatch", daemon=True)
        watcher.start()
        runner.start()
        try:
            # An Event, not Thread.join: a join interrupted by a signal (execution_timeout's SIGALRM)
            # can mark a live thread as stopped in CPython 3.11, and a later join would not wait.
            while not self.dispatched.wait(0.25):
                if self.cancel_issued.is_set():  # every trial is already recorded as cancelled
                    self.dispatched.wait(self.CANCEL_GRACE_S)
                    break
        except BaseException:
            # A task timeout or interrupt in the main thread: stop the Spark jobs before leaving.
            self.control.cancel("interrupted")
            self.dispatched.wait(30)
            raise
        finally:
            self.dispatched.set()  # the watcher's last round
            watcher.join()
        if self.dispatch_error is not None:
            raise self.dispatch_error
        return self._result()

    def _pace(self) -> None:
        """Back-pressure, before each new trial: wait while there is no room to report more trials.

        The trials started and not reported yet count as coming: the watcher reports them in rounds,
        so without them a burst of instant trials between two rounds would overrun the bound. A
        cancel, the end of the dispatch or the run's deadline ends the wait: those must not wait
        for a tracking server that is down.
        """
        assert self.room is not None
        if not self.room(0, self._unreported()):
            started = time.monotonic()
            if not self.paced_s:  # once per run: under a slow tracking server every trial may wait
                log.info(
                    "trial reports are behind (their MLflow writes are queued): new trials wait for room"
                )
            deadline = None if self.spec.timeout is None else self.started + self.spec.timeout
            while not self.room(self.PACE_S, self._unreported()):
                if self.control.cancel_requested or self.dispatched.is_set():
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
            self.paced_s += time.monotonic() - started
        with self._pace_lock:  # resident tasks ask for trials from several threads
            self.paced_trials += 1

    def _unreported(self) -> int:
        """Trials started by the dispatcher that the watcher has not reported yet (running or finished)."""
        return max(0, self.paced_trials - (len(self.records) - self.preloaded))

    def _dispatch(self) -> None:
        assert self.dispatcher is not None
        try:
            if self.control.cancel_requested:  # killed while Spark or the history was still loading
                log.info("cancelled (%s) before the first trial started", self.control.reason)
            elif self.preloaded >= int(self.spec.max_evals):
                log.info("every trial of the budget was finished by earlier tries; nothing left to run")
            else:
                deadline = None if self.spec.timeout is None else self.started + self.spec.timeout
                self.ending = self.dispatcher.run(deadline)
        except BaseException as err:  # re-raised in the calling thread
            self.dispatch_error = err
        finally:
            self.dispatched.set()

    def _watch(self) -> None:
        assert self.dispatcher is not None
        cancelled = False
        while not self.dispatched.is_set():
            try:
                self._collect_finished()
                if not cancelled and self.control.cancel_requested:
                    cancelled = True
                    self.dispatcher.cancel(self.control.reason or "killed")
                    self.cancel_issued.set()
            except Exception:
                log.exception("the trial watcher hit an error; it keeps watching")
            self.dispatched.wait(self.POLL_S)
        self._collect_finished()

    def _collect_finished(self) -> None:
        from hyperopt import base

        assert self.dispatcher is not None
        for trial in self.book.newly_finished():
            if trial["tid"] in self.records:
                continue
            if trial["state"] == base.JOB_STATE_CANCEL and trial.get("book_time") is None:
                self.records[trial["tid"]] = self._record(trial)  # never started: counted, not reported
                continue
            record = self._record(trial)
            self.records[record.tid] = record
            self._update_best(record)
            progress = Progress(
                finished=len(self.records),
                max_evals=int(self.spec.max_evals),
                best_loss=self.best_loss,
                elapsed_s=time.monotonic() - self.started,
            )
            self.dispatcher.observe(record, progress)
            if self.on_trial is not None:
                try:
                    self.on_trial(record, progress)
                except Exception:
                    log.exception("reporting trial %s failed; the run goes on", record.tid)

    def _update_best(self, record: TrialRecord) -> None:
        if record.status == "ok" and record.loss is not None:
            self.best_loss = record.loss if self.best_loss is None else min(self.best_loss, record.loss)

    def _record(self, trial: dict[str, Any]) -> TrialRecord:
        warm = self.warm.assigned.get(int(trial["tid"])) if self.warm is not None else None
        return record_from_doc(trial, self.space, warm=warm)

    def _result(self) -> TuningResult:
        records = tuple(sorted(self.records.values(), key=lambda r: r.tid))
        if self.stops.failure_limit.message is not None:
            raise TooManyFailedTrialsError(
                failure_stop_message(self.stops.failure_limit.message, records, self.spec)
            )
        if self.control.cancel_requested:
            raise TuningCancelledError(
                f"tuning run cancelled ({self.control.reason}) after {len(records)} finished trials"
            )
        ok = [r for r in records if r.status == "ok"]
        reason = self._stopped_reason()
        if not ok:
            raise AllTrialsFailedError(no_success_message(records, reason, self.spec))
        best = min(ok, key=lambda r: (r.loss, r.tid))
        front: tuple[TrialRecord, ...] = ()
        if self.spec.directions:
            from airflow_provider_sparktune.search.pareto import best_on_front, pareto_front

            front = pareto_front(ok, self.spec.directions)
            best = best_on_front(front) if front else best
        duration = time.monotonic() - self.started
        busy_share, overhead = efficiency(records, int(self.spec.parallelism), duration)
        return TuningResult(
            best_params=best.params,
            best_loss=float(best.loss),  # type: ignore[arg-type]
            argmin=best.vals,
            trials_total=len(records),
            trials_ok=len(ok),
            trials_failed=sum(r.status == "failed" for r in records),
            trials_cancelled=sum(r.status == "cancelled" for r in records),
            trials_pruned=sum(r.status == "pruned" for r in records),
            trials_lost=self.dispatcher.lost if self.dispatcher is not None else 0,
            stopped_reason=reason,
            duration_s=duration,
            efficiency=busy_share,
            trial_overhead_s=overhead,
            spec=self.spec,
            records=records,
            trials=self.book.trials,
            startup_s=self._startup_s(records),
            pareto_front=front,
        )

    def _startup_s(self, records: tuple[TrialRecord, ...]) -> float | None:
        """How long after ``started_at`` the first trial of this run started on an executor."""
        starts = [r.started_at for r in records if r.origin != "resumed" and r.started_at is not None]
        return max(0.0, min(starts) - self.started_at) if starts else None

    def _stopped_reason(self) -> StopReason:
        if self.stops.early_stopped:
            return "early_stop"
        if self.ending == "timeout":
            return "timeout"
        threshold = self.spec.loss_threshold
        if threshold is not None and self.best_loss is not None and self.best_loss <= threshold:
            return "loss_threshold"
        return "max_evals"
