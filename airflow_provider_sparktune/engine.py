"""run_tuning(): hyperopt ``fmin`` with ``SparkTrials`` on a given SparkSession, usable without Airflow.

Three things are added around hyperopt's own loop:

* a watcher thread on the driver that reports each finished trial (task log, MLflow) as it lands,
  applies early stopping and carries out cancellation. Early stopping never goes through hyperopt's
  ``early_stop_fn``, whose SparkTrials path can crash the dispatcher thread and hang ``fmin``;
* ``fmin`` runs in a worker thread, so a task timeout or SIGTERM landing in the main thread cancels
  the Spark job group first instead of waiting in SparkTrials' thread joins for running trials;
* suggestions are seeded per trial id, so ``seed`` reproduces the same points however the trials
  were batched by timing (adaptive TPE rounds still depend on which trials had finished);
* trials of earlier runs come in two ways: ``resume`` (finished trials of an earlier try, loaded as
  done so that TPE learns from them and ``max_evals`` counts them) and ``warm_start`` (the best points
  of earlier runs, evaluated again first); and a run whose objective fails systematically stops
  early (``max_failed_trials``, ``max_failure_ratio``) instead of spending its whole budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from airflow_provider_sparktune.exceptions import (
    AllTrialsFailedError,
    TooManyFailedTrialsError,
    TuningCancelledError,
    TuningConfigError,
)
from airflow_provider_sparktune.objective import build_trial_objective
from airflow_provider_sparktune.prior import PriorTrial, finished_trial_doc, new_trial_doc, space_labels
from airflow_provider_sparktune.resident import ResidentDispatcher
from airflow_provider_sparktune.results import json_native
from airflow_provider_sparktune.space import SpaceFacts, build_space, space_facts
from airflow_provider_sparktune.staging import StagedData, StagingPlan

log = logging.getLogger(__name__)

ALGORITHMS = ("tpe", "rand", "anneal", "atpe")
DISPATCHERS = ("resident", "sparktrials")
MAX_PARALLELISM = 128  # SparkTrials' hard cap on concurrent trials
StopReason = Literal["max_evals", "timeout", "loss_threshold", "early_stop"]
TrialStatus = Literal["ok", "failed", "cancelled"]
TrialOrigin = Literal["new", "resumed", "warm_start"]
AUTO_FAILED_TRIALS_MIN = 3  # "auto": stop when this many (or parallelism) trials failed before any succeeded
FAILURE_RATIO_MIN_FINISHED = 5  # max_failure_ratio is judged once this many trials (or parallelism) finished
FAILURE_STOP = "too many failed trials"


@dataclass(frozen=True)
class TuningSpec:
    """Validated budget and search settings of one run."""

    max_evals: int | Literal["auto"] = "auto"
    parallelism: int | Literal["auto"] = "auto"
    algo: str = "tpe"
    seed: int | None = None
    timeout: float | None = None
    loss_threshold: float | None = None
    early_stop_after: int | None = None
    dispatcher: str = "resident"
    max_failed_trials: int | Literal["auto"] | None = "auto"
    max_failure_ratio: float | None = None

    def __post_init__(self) -> None:
        _check_count("max_evals", self.max_evals, allow_auto=True)
        _check_count("parallelism", self.parallelism, allow_auto=True, upper=MAX_PARALLELISM)
        if self.algo not in ALGORITHMS:
            raise TuningConfigError(
                f"algo: unknown algorithm {self.algo!r}; use one of {', '.join(ALGORITHMS)}"
            )
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise TuningConfigError(f"seed: {self.seed!r} must be a non-negative integer or None")
        if self.timeout is not None and (not _is_number(self.timeout) or self.timeout <= 0):
            raise TuningConfigError(f"timeout: {self.timeout!r} must be a positive number of seconds or None")
        if self.loss_threshold is not None and not _is_number(self.loss_threshold):
            raise TuningConfigError(
                f"loss_threshold: {self.loss_threshold!r} must be a finite number or None"
            )
        if self.early_stop_after is not None:
            _check_count("early_stop_after", self.early_stop_after)
        if self.dispatcher not in DISPATCHERS:
            raise TuningConfigError(
                f"dispatcher: unknown dispatcher {self.dispatcher!r}; use one of {', '.join(DISPATCHERS)}"
            )
        if self.max_failed_trials is not None:
            _check_count("max_failed_trials", self.max_failed_trials, allow_auto=True)
        ratio = self.max_failure_ratio
        if ratio is not None and (not _is_number(ratio) or not 0 < ratio < 1):
            raise TuningConfigError(
                f"max_failure_ratio: {ratio!r} must be a number between 0 and 1 (exclusive) or None"
            )

    def resolved(self, facts: SpaceFacts, task_slots: int) -> TuningSpec:
        """The same spec with ``"auto"`` budgets replaced by the seed's guidance."""
        max_evals = facts.suggested_max_evals() if self.max_evals == "auto" else self.max_evals
        parallelism = (
            min(facts.suggested_parallelism(task_slots), int(max_evals))
            if self.parallelism == "auto"
            else self.parallelism
        )
        return TuningSpec(
            max_evals=int(max_evals),
            parallelism=int(parallelism),
            algo=self.algo,
            seed=self.seed,
            timeout=self.timeout,
            loss_threshold=self.loss_threshold,
            early_stop_after=self.early_stop_after,
            dispatcher=self.dispatcher,
            max_failed_trials=self.max_failed_trials,
            max_failure_ratio=self.max_failure_ratio,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_count(name: str, value: Any, *, allow_auto: bool = False, upper: int | None = None) -> None:
    if allow_auto and value == "auto":
        return
    hint = ' or "auto"' if allow_auto else ""
    if not _is_int(value) or value < 1:
        raise TuningConfigError(f"{name}: {value!r} must be a positive integer{hint}")
    if upper is not None and value > upper:
        raise TuningConfigError(f"{name}: {value} is above SparkTrials' cap of {upper}; use at most {upper}")


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial in plain Python types: what the task log, MLflow and XCom need."""

    tid: int
    status: TrialStatus
    loss: float | None
    params: dict[str, Any]
    vals: dict[str, Any]
    metrics: dict[str, float]
    error: str | None
    started_at: float | None
    finished_at: float | None
    eval_s: float | None = None  # time inside the objective, measured on the executor
    origin: TrialOrigin = "new"  # "resumed": finished by an earlier try; "warm_start": a best point re-run
    source_run_id: str | None = None  # the MLflow trial run a resumed or warm-start trial came from

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return json_native(
            {
                "tid": self.tid,
                "status": self.status,
                "loss": self.loss,
                "params": self.params,
                "vals": self.vals,
                "metrics": self.metrics,
                "error": self.error,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "duration_s": self.duration_s,
                "eval_s": self.eval_s,
                "origin": self.origin,
                "source_run_id": self.source_run_id,
            }
        )


@dataclass(frozen=True)
class Progress:
    """Where the run stands when a trial finishes."""

    finished: int
    max_evals: int
    best_loss: float | None
    elapsed_s: float


@dataclass(frozen=True)
class TuningResult:
    best_params: dict[str, Any]
    best_loss: float
    argmin: dict[str, Any]
    trials_total: int
    trials_ok: int
    trials_failed: int
    trials_cancelled: int
    stopped_reason: StopReason
    duration_s: float
    efficiency: float  # time spent in objectives / (parallelism x wall time)
    trial_overhead_s: float  # idle slot time per finished trial
    spec: TuningSpec
    records: tuple[TrialRecord, ...]
    trials: Any = field(default=None, repr=False, compare=False)  # the SparkTrials object, for analysis


TrialCallback = Callable[[TrialRecord, Progress], None]


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


def _per_trial_seeded(algo: Callable[..., Any], base_seed: int | None) -> Callable[..., Any]:
    """Seed each suggestion by (seed, trial id) so batching by timing does not change the points."""
    import numpy as np

    def suggest(new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[Any]:
        docs: list[Any] = []
        for new_id in new_ids:
            trial_seed = (
                seed
                if base_seed is None
                else int(np.random.SeedSequence([base_seed, new_id]).generate_state(1)[0])
            )
            docs.extend(algo([new_id], domain, trials, trial_seed))
        return docs

    return suggest


def _algorithm(name: str) -> Callable[..., Any]:
    if name == "atpe":
        try:
            import lightgbm  # noqa: F401  # hyperopt imports it only at the first suggestion
            from hyperopt import atpe
        except ImportError as err:
            raise TuningConfigError(
                f"algo: 'atpe' needs extra packages ({err}); install lightgbm or use 'tpe'"
            ) from None
        return atpe.suggest
    from hyperopt import anneal, rand, tpe

    return {"tpe": tpe.suggest, "rand": rand.suggest, "anneal": anneal.suggest}[name]


@dataclass(frozen=True)
class PreparedRun:
    """Everything checked before Spark is touched: compiled space, pickled-once objective, budget."""

    space: Any
    facts: SpaceFacts
    objective: Any
    suggest: Callable[..., Any]
    spec: TuningSpec


def prepare_run(
    search_space: Any,
    objective: Any,
    *,
    max_evals: int | Literal["auto"] = "auto",
    parallelism: int | Literal["auto"] = "auto",
    algo: str = "tpe",
    seed: int | None = None,
    timeout: float | None = None,
    loss_threshold: float | None = None,
    early_stop_after: int | None = None,
    dispatcher: str = "resident",
    max_failed_trials: int | Literal["auto"] | None = "auto",
    max_failure_ratio: float | None = None,
    objective_kwargs: Mapping[str, Any] | None = None,
    data: Any = None,
) -> PreparedRun:
    """Validate every argument that needs no Spark; raises a SparktuneError naming the field."""
    spec = TuningSpec(
        max_evals,
        parallelism,
        algo,
        seed,
        timeout,
        loss_threshold,
        early_stop_after,
        dispatcher,
        max_failed_trials,
        max_failure_ratio,
    )
    space = build_space(search_space)
    facts = space_facts(search_space)
    if isinstance(data, StagingPlan):
        data = StagedData.open(data)
    trial_objective = build_trial_objective(
        objective, data=data, objective_kwargs=objective_kwargs, space=space
    )
    suggest = _per_trial_seeded(_algorithm(spec.algo), spec.seed)
    return PreparedRun(space, facts, trial_objective, suggest, spec)


def execute_run(
    prepared: PreparedRun,
    spark: Any,
    *,
    on_trial: TrialCallback | None = None,
    control: RunControl | None = None,
    on_start: Callable[[TuningSpec, SpaceFacts], None] | None = None,
    resume: Sequence[PriorTrial] = (),
    warm_start: Sequence[PriorTrial] = (),
) -> TuningResult:
    """Run a prepared tuning on ``spark``; ``on_start`` sees the budget once "auto" is resolved.

    Staged data is attached first (broadcast mode loads and broadcasts it, or falls back to reload)
    so ``on_start`` sees the final plan, and the broadcast is destroyed however the run ends.
    ``resume``: finished trials of an earlier try; they count toward ``max_evals`` and are not run
    again. ``warm_start``: points evaluated first, before ``algo`` is asked. Both must fit the space
    (see :func:`prior.split_fitting`).
    """
    spec = prepared.spec.resolved(prepared.facts, task_slots=spark.sparkContext.defaultParallelism)
    data = getattr(prepared.objective, "data", None)
    staged = data if isinstance(data, StagedData) else None
    try:
        if staged is not None:
            staged.attach(spark)
        if on_start is not None:
            on_start(spec, prepared.facts)
        run = _Run(
            spark,
            prepared.space,
            prepared.objective,
            prepared.suggest,
            spec,
            on_trial,
            control or RunControl(),
        )
        run.preload(resume, warm_start)
        return run.execute()
    finally:
        if staged is not None:
            staged.release()


def run_tuning(
    search_space: Any,
    objective: Any,
    *,
    spark: Any,
    on_trial: TrialCallback | None = None,
    control: RunControl | None = None,
    **settings: Any,
) -> TuningResult:
    """Tune ``objective`` over ``search_space`` with SparkTrials on ``spark`` and return the best point.

    ``settings`` are those of :func:`prepare_run` (max_evals, parallelism, algo, seed, timeout,
    loss_threshold, early_stop_after, dispatcher, max_failed_trials, max_failure_ratio,
    objective_kwargs, data). ``data`` may be a ``StagingPlan`` or a ``StagedData``: the objective
    then reads ``data.value`` however the data was staged. Everything that can be checked without
    Spark is checked first. ``on_trial`` is called on the driver, off the dispatch path, once per
    finished trial.
    """
    prepared = prepare_run(search_space, objective, **settings)
    return execute_run(prepared, spark, on_trial=on_trial, control=control)


class _WarmStart:
    """Suggests the given points first, in order, then asks ``algo``; remembers which tid got which."""

    def __init__(self, points: Sequence[PriorTrial], labels: Sequence[str], algo: Callable[..., Any]) -> None:
        self.points = list(points)
        self.labels, self.algo = labels, algo
        self.assigned: dict[int, PriorTrial] = {}

    def __call__(self, new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[Any]:
        docs: list[Any] = []
        rest: list[int] = []
        for new_id in new_ids:
            if self.points:
                point = self.points.pop(0)
                self.assigned[new_id] = point
                docs.append(new_trial_doc(trials, new_id, point.vals, self.labels))
            else:
                rest.append(new_id)
        if rest:
            docs.extend(self.algo(rest, domain, trials, seed))
        return docs


class _Run:
    """One run: a dispatch thread, a watcher thread, and the state they share."""

    POLL_S = 0.2
    # After a kill's cancel, how long to let the dispatcher end cleanly before the result is made
    # without it: under a scheduler the task has 5 s between SIGTERM and SIGKILL to close its runs,
    # and cancelled Spark tasks can take longer than that to end.
    CANCEL_GRACE_S = 0.5

    def __init__(
        self,
        spark: Any,
        space: Any,
        trial_objective: Any,
        suggest: Callable[..., Any],
        spec: TuningSpec,
        on_trial: TrialCallback | None,
        control: RunControl,
    ) -> None:
        from hyperopt import SparkTrials

        self.spark, self.space, self.objective, self.suggest = spark, space, trial_objective, suggest
        self.spec, self.on_trial, self.control = spec, on_trial, control
        self.trials = SparkTrials(parallelism=spec.parallelism, timeout=spec.timeout, spark_session=spark)
        self.records: dict[int, TrialRecord] = {}
        self.best_loss: float | None = None
        self.early_stop = EarlyStop(spec.early_stop_after) if spec.early_stop_after else None
        self.fmin_error: BaseException | None = None
        self.fmin_done = threading.Event()
        self.cancel_issued = threading.Event()  # the watcher has cancelled the trials of a kill
        self.resident: ResidentDispatcher | None = None
        self.started = time.monotonic()
        self.preloaded = 0
        self.preloaded_failed = 0
        self.warm: _WarmStart | None = None
        self.failure_limit = FailureLimit(spec)

    def preload(self, resume: Sequence[PriorTrial], warm_start: Sequence[PriorTrial]) -> None:
        """Finished trials of an earlier try as done trial docs; warm-start points queued first."""
        if not resume and not warm_start:
            return
        labels = space_labels(self.space)
        if resume:
            tids = self.trials.new_trial_ids(len(resume))
            docs = [
                finished_trial_doc(self.trials, tid, prior, labels)
                for tid, prior in zip(tids, resume, strict=True)
            ]
            self.trials.insert_trial_docs(docs)
            self.trials.refresh()
            for tid, prior in zip(tids, resume, strict=True):
                record = self._prior_record(tid, prior)
                self.records[tid] = record
                if record.status == "ok" and record.loss is not None:
                    self.best_loss = (
                        record.loss if self.best_loss is None else min(self.best_loss, record.loss)
                    )
            self.preloaded = len(resume)
            self.preloaded_failed = sum(prior.status != "ok" for prior in resume)
            log.info(
                "resumed %d finished trial(s) of earlier tries (%d failed); %d left to run",
                self.preloaded,
                self.preloaded_failed,
                max(0, int(self.spec.max_evals) - self.preloaded),
            )
        if warm_start:
            self.warm = _WarmStart(warm_start, labels, self.suggest)
            self.suggest = self.warm

    def _prior_record(self, tid: int, prior: PriorTrial) -> TrialRecord:
        from hyperopt import space_eval

        params = json_native(space_eval(self.space, prior.vals))
        ok = prior.status == "ok"
        return TrialRecord(
            tid=tid,
            status=prior.status,
            loss=prior.loss if ok else None,
            params=params if isinstance(params, dict) else {"value": params},
            vals=json_native(prior.vals),
            metrics=dict(prior.metrics) if ok else {},
            error=None if ok else prior.error,
            started_at=prior.started_at,
            finished_at=prior.finished_at,
            origin="resumed",
            source_run_id=prior.source_run_id,
        )

    def execute(self) -> TuningResult:
        watcher = threading.Thread(target=self._watch, name="sparktune-watcher", daemon=True)
        target = self._resident if self.spec.dispatcher == "resident" else self._fmin
        if self.preloaded >= int(self.spec.max_evals):
            target = self._nothing_left
        if self.control.cancel_requested:  # killed while Spark or the history was still loading
            target = self._cancelled_before_start
        dispatched = threading.Event()
        runner = threading.Thread(
            target=self._dispatch, args=(target, dispatched), name="sparktune-dispatch", daemon=True
        )
        watcher.start()
        runner.start()
        try:
            # An Event, not Thread.join: a join interrupted by a signal (execution_timeout's SIGALRM)
            # can mark a live thread as stopped in CPython 3.11, and a later join would not wait.
            while not dispatched.wait(0.25):
                if self.cancel_issued.is_set():  # every trial is already recorded as cancelled
                    dispatched.wait(self.CANCEL_GRACE_S)
                    break
        except BaseException:
            # A task timeout or interrupt in the main thread: stop the Spark jobs before leaving.
            self.control.cancel("interrupted")
            dispatched.wait(30)
            raise
        finally:
            self.fmin_done.set()
            watcher.join()
        if self.fmin_error is not None:
            raise self.fmin_error
        return self._result()

    @staticmethod
    def _dispatch(target: Callable[[], None], dispatched: threading.Event) -> None:
        try:
            target()
        finally:
            dispatched.set()

    def _nothing_left(self) -> None:
        log.info("every trial of the budget was finished by earlier tries; nothing left to run")

    def _cancelled_before_start(self) -> None:
        log.info("cancelled (%s) before the first trial started", self.control.reason)

    def _resident(self) -> None:
        import numpy as np
        from hyperopt.base import Domain

        self.resident = ResidentDispatcher(
            spark=self.spark,
            trials=self.trials,
            domain=Domain(self.objective, self.space, pass_expr_memo_ctrl=None),
            suggest=self.suggest,
            rstate=np.random.default_rng(self.spec.seed),
            max_evals=int(self.spec.max_evals),
            parallelism=int(self.spec.parallelism),
            loss_threshold=self.spec.loss_threshold,
            early_stop=self.early_stop,
            job_group=self.control.job_group,
            already_queued=self.preloaded,
            failure_limit=self.failure_limit,
        )
        deadline = None if self.spec.timeout is None else self.started + self.spec.timeout
        if self.control.cancel_requested:  # the watcher may have acted before the dispatcher existed
            self.resident.cancel(self.control.reason or "killed")
        try:
            self.resident.run(deadline)
        except BaseException as err:  # re-raised in the calling thread
            self.fmin_error = err

    def _fmin(self) -> None:
        import numpy as np
        from hyperopt import fmin

        sc = self.spark.sparkContext
        sc.setLocalProperty("spark.jobGroup.id", self.control.job_group)
        sc.setLocalProperty("spark.job.description", "sparktune trials")
        sc.setLocalProperty("spark.job.interruptOnCancel", "true")
        try:
            fmin(
                fn=self.objective,
                space=self.space,
                algo=self.suggest,
                # fmin counts finished docs except errors toward max_evals; resumed failures count too
                max_evals=int(self.spec.max_evals) - self.preloaded_failed,
                trials=self.trials,
                rstate=np.random.default_rng(self.spec.seed),
                loss_threshold=self.spec.loss_threshold,
                max_queue_len=self.spec.parallelism,
                show_progressbar=False,
                return_argmin=False,
            )
        except BaseException as err:  # re-raised in the calling thread
            self.fmin_error = err
        finally:
            for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
                sc.setLocalProperty(key, None)

    def _watch(self) -> None:
        cancelled = False
        while not self.fmin_done.is_set():
            try:
                self._collect_finished()
                if not cancelled and self.control.cancel_requested:
                    cancelled = True
                    self._cancel(self.control.reason or "killed")
                    self.cancel_issued.set()
            except Exception:
                log.exception("the trial watcher hit an error; it keeps watching")
            self.fmin_done.wait(self.POLL_S)
        self._collect_finished()

    def _cancel(self, reason: str) -> None:
        """What SparkTrials does on timeout, from outside: stop new trials and cancel the job group."""
        from hyperopt import base

        if self.resident is not None:
            self.resident.cancel(reason)
            log.info("cancelled the trials of job group %s: %s", self.control.job_group, reason)
            return

        self.trials._fmin_cancelled = True
        self.trials._fmin_cancelled_reason = reason
        for trial in list(self.trials._dynamic_trials):
            if trial["state"] in (base.JOB_STATE_NEW, base.JOB_STATE_RUNNING):
                trial["state"] = base.JOB_STATE_CANCEL
        self.spark.sparkContext.cancelJobGroup(self.control.job_group)
        log.info("cancelled the trials of job group %s: %s", self.control.job_group, reason)

    def _collect_finished(self) -> None:
        from hyperopt import base

        finished_states = (base.JOB_STATE_DONE, base.JOB_STATE_ERROR, base.JOB_STATE_CANCEL)
        finished = [t for t in list(self.trials._dynamic_trials) if t["state"] in finished_states]
        for trial in sorted(finished, key=lambda t: (t.get("refresh_time") or datetime.min, t["tid"])):
            if trial["tid"] in self.records:
                continue
            if trial["state"] == base.JOB_STATE_CANCEL and trial.get("book_time") is None:
                self.records[trial["tid"]] = self._record(trial)  # never started: counted, not reported
                continue
            record = self._record(trial)
            self.records[record.tid] = record
            self._update_best(record)
            self._check_failures(record)
            if self.on_trial is not None:
                progress = Progress(
                    finished=len(self.records),
                    max_evals=int(self.spec.max_evals),
                    best_loss=self.best_loss,
                    elapsed_s=time.monotonic() - self.started,
                )
                try:
                    self.on_trial(record, progress)
                except Exception:
                    log.exception("reporting trial %s failed; the run goes on", record.tid)

    def _update_best(self, record: TrialRecord) -> None:
        if record.status != "ok" or record.loss is None:
            return
        if self.best_loss is None or record.loss < self.best_loss:
            self.best_loss = record.loss
        # The resident dispatcher checks early stopping itself, as each result arrives.
        if self.resident is None and self.early_stop is not None and self.early_stop.observe(record.loss):
            self._cancel("early_stop")

    def _check_failures(self, record: TrialRecord) -> None:
        # The resident dispatcher checks the failure limit itself, as each result arrives.
        if self.resident is not None or record.status == "cancelled":
            return
        if self.failure_limit.observe(
            record.status == "ok", remaining=len(self.records) < int(self.spec.max_evals)
        ):
            self._cancel(FAILURE_STOP)

    @property
    def early_stopped(self) -> bool:
        return self.early_stop is not None and self.early_stop.triggered

    def _record(self, trial: dict[str, Any]) -> TrialRecord:
        from hyperopt import base, space_eval

        vals = {k: v[0] for k, v in trial["misc"]["vals"].items() if len(v)}
        result = trial.get("result") or {}
        state = trial["state"]
        error = None
        if state == base.JOB_STATE_ERROR:
            status: TrialStatus = "failed"
            error = _error_text(trial["misc"].get("error"))
        elif state == base.JOB_STATE_CANCEL:
            status = "cancelled"
            error = _error_text(trial["misc"].get("error"))
        elif result.get("status") == base.STATUS_OK:
            status = "ok"
        else:
            status = "failed"
            error = str(result.get("failure") or f"objective returned status {result.get('status')!r}")
        try:
            params = json_native(space_eval(self.space, vals))
        except Exception:  # a cancelled trial may carry partial vals
            params = {}
        loss = result.get("loss") if status == "ok" else None
        warm = self.warm.assigned.get(int(trial["tid"])) if self.warm is not None else None
        return TrialRecord(
            tid=int(trial["tid"]),
            status=status,
            loss=None if loss is None else float(loss),
            params=params if isinstance(params, dict) else {"value": params},
            vals=json_native(vals),
            metrics=dict(result.get("metrics") or {}) if status == "ok" else {},
            error=error,
            started_at=_timestamp(trial.get("book_time")),
            finished_at=_timestamp(trial.get("refresh_time")),
            eval_s=trial["misc"].get("sparktune_eval_s"),
            origin="warm_start" if warm is not None else "new",
            source_run_id=warm.source_run_id if warm is not None else None,
        )

    def _result(self) -> TuningResult:
        records = tuple(sorted(self.records.values(), key=lambda r: r.tid))
        if self.failure_limit.message is not None:
            raise TooManyFailedTrialsError(
                _failure_stop_message(self.failure_limit.message, records, self.spec)
            )
        if self.control.cancel_requested:
            raise TuningCancelledError(
                f"tuning run cancelled ({self.control.reason}) after {len(records)} finished trials"
            )
        ok = [r for r in records if r.status == "ok"]
        reason = self._stopped_reason()
        if not ok:
            raise AllTrialsFailedError(_no_success_message(records, reason, self.spec))
        best = min(ok, key=lambda r: (r.loss, r.tid))
        duration = time.monotonic() - self.started
        efficiency, overhead = _efficiency(records, int(self.spec.parallelism), duration)
        return TuningResult(
            best_params=best.params,
            best_loss=float(best.loss),  # type: ignore[arg-type]
            argmin=best.vals,
            trials_total=len(records),
            trials_ok=len(ok),
            trials_failed=sum(r.status == "failed" for r in records),
            trials_cancelled=sum(r.status == "cancelled" for r in records),
            stopped_reason=reason,
            duration_s=duration,
            efficiency=efficiency,
            trial_overhead_s=overhead,
            spec=self.spec,
            records=records,
            trials=self.trials,
        )

    def _stopped_reason(self) -> StopReason:
        if self.early_stopped:
            return "early_stop"
        if self.trials._fmin_cancelled_reason == "fmin run timeout":
            return "timeout"
        threshold = self.spec.loss_threshold
        if threshold is not None and self.best_loss is not None and self.best_loss <= threshold:
            return "loss_threshold"
        return "max_evals"


def _efficiency(records: tuple[TrialRecord, ...], parallelism: int, wall_s: float) -> tuple[float, float]:
    """Busy share of the trial slots, and the idle slot time per finished trial."""
    ran = [r for r in records if r.started_at is not None]
    busy = sum((r.eval_s if r.eval_s is not None else r.duration_s or 0.0) for r in ran)
    capacity = parallelism * wall_s
    if not ran or capacity <= 0:
        return 0.0, 0.0
    return min(1.0, busy / capacity), max(0.0, capacity - busy) / len(ran)


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc).timestamp()


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, (tuple, list)) and len(error) == 2:
        kind, detail = error
        return str(detail) if detail else str(kind)
    return str(error)


def _failure_stop_message(stop: str, records: tuple[TrialRecord, ...], spec: TuningSpec) -> str:
    failed = [r for r in records if r.status == "failed" and r.origin != "resumed"]
    first = failed[0]
    return (
        f"{stop}; stopped after {len(records)} of max_evals={spec.max_evals} trials instead of spending the "
        "whole budget: the objective fails systematically (bad data? a module missing on the executors?). "
        f"Raise max_failed_trials or set it to None to go on regardless. First failure, trial {first.tid} "
        f"with params {first.params}:\n{first.error}"
    )


def _no_success_message(records: tuple[TrialRecord, ...], reason: StopReason, spec: TuningSpec) -> str:
    failed = [r for r in records if r.status == "failed"]
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
