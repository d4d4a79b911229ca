"""A tuning session: one run together with its MLflow record, resume of earlier tries and warm start.

The core of what the operator does, without Airflow: notebooks and other schedulers get the same
parent and trial runs, the same resume of a failed try and the same nightly warm start. The
operator maps the Airflow context (connections, run id, try number) onto :class:`TrackingOptions`.

    session = TuningSession(prepare_run(space, objective, max_evals=50), TrackingOptions(
        tracking_uri="sqlite:///mlflow.db", experiment="churn", run_key="2026-12-01", warm_start=True))
    result = session.run(spark)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_sparktune.exceptions import TrackingError, TuningCancelledError, TuningConfigError
from airflow_provider_sparktune.redaction import redact_text, redact_uri, redact_values
from airflow_provider_sparktune.tracking import schema
from airflow_provider_sparktune.tuning.prepare import PreparedRun, prepare_run
from airflow_provider_sparktune.tuning.records import Progress, TrialCallback, TrialRecord, TuningResult
from airflow_provider_sparktune.tuning.run import RunControl, execute_run
from airflow_provider_sparktune.tuning.spec import check_count
from airflow_provider_sparktune.values import json_native, positive_seconds

if TYPE_CHECKING:
    from airflow_provider_sparktune.tracking.history import EarlierTrial
    from airflow_provider_sparktune.tracking.tracker import TuningTracker
    from airflow_provider_sparktune.tracking.write_queue import RetryingWriter, Write
    from airflow_provider_sparktune.tuning.spec import TuningSpec

log = logging.getLogger(__name__)

# On a kill, how long queued trial writes may take once the parent run is closed KILLED. The parent is
# closed first because a scheduler's SIGKILL may follow its SIGTERM within seconds (Airflow: 5 s).
KILL_FLUSH_S = 10.0
# How often a running try asks MLflow whether a later try has taken over its run (one read, queued).
FENCE_CHECK_S = 30.0
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]+")


def check_tuning_key(key: Any) -> str:
    """A tuning key goes into MLflow searches: letters, digits and ``_ . : -`` only."""
    if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
        raise TuningConfigError(
            f"tuning_key: {key!r} may hold only letters, digits and _ . : - (it is matched in MLflow searches)"
        )
    return key


@dataclass(frozen=True)
class TrackingOptions:
    """Where a session records itself in MLflow and which earlier runs it builds on."""

    tracking_uri: str
    experiment: str
    run_name: str = "tuning"
    tuning_key: str | None = None  # what a warm start matches earlier runs by; default: the experiment
    run_key: str | None = None  # every try of one logical run passes the same key: a retry resumes
    attempt_tags: Mapping[str, str] = field(default_factory=dict)  # or: the tags every try carries
    warm_start_excludes: Mapping[str, str] | None = None  # runs with these tags are no warm-start source
    tags: Mapping[str, Any] = field(default_factory=dict)  # more parent-run tags
    warm_start: bool = False
    warm_start_k: int = 5
    retry_timeout: float = 300.0  # how long to keep retrying MLflow writes after the last trial
    # Applied to error texts and URIs before they reach MLflow or the log (under Airflow: its secrets
    # masker, then redact_text); default: redact_text alone.
    redact: Callable[[str], str] | None = None

    def __post_init__(self) -> None:
        check_tuning_key(self.key)
        check_count("warm_start_k", self.warm_start_k)
        positive_seconds("mlflow_retry_timeout", self.retry_timeout)

    @property
    def key(self) -> str:
        return self.tuning_key or self.experiment

    @property
    def try_tags(self) -> dict[str, str]:
        """The tags shared by every try of this run: earlier tries are found by them."""
        if self.run_key is not None:
            return {**self.attempt_tags, schema.RUN_KEY: self.run_key}
        return dict(self.attempt_tags)


class SparkStart:
    """Makes the SparkSession in a thread when given a call that makes one; a session is used as it is."""

    def __init__(self, spark: Any) -> None:
        self._session = None if callable(spark) else spark
        self._error: BaseException | None = None
        self._done = threading.Event()
        self.duration_s = 0.0
        if not callable(spark):
            self._done.set()
            return
        threading.Thread(target=self._make, args=(spark,), name="sparktune-spark-start", daemon=True).start()

    def _make(self, make: Callable[[], Any]) -> None:
        started = time.monotonic()
        try:
            self._session = make()
        except BaseException as err:  # raised again by wait(), in the caller's thread
            self._error = err
        finally:
            self.duration_s = time.monotonic() - started
            self._done.set()

    def wait(self) -> Any:
        """The session, once made; what making it raised, raised here."""
        self.wait_quietly()
        if self._error is not None:
            raise self._error
        return self._session

    def wait_quietly(self) -> None:
        """Wait for the start to end, whatever its outcome (so ``stop_spark`` finds the session)."""
        while not self._done.wait(0.25):  # an Event: a signal landing in a thread join is unsafe
            pass


class TuningSession:
    """One tuning run with its MLflow parent run, trial runs, resume and warm start.

    ``control.cancel()`` from any thread (a signal handler, ``on_kill``) ends it: the parent run is
    closed KILLED first, then the trial runs already finished are written.
    """

    def __init__(
        self,
        prepared: PreparedRun,
        tracking: TrackingOptions,
        *,
        control: RunControl | None = None,
        on_trial: TrialCallback | None = None,
        logger: Any = None,
    ) -> None:
        self.prepared, self.options = prepared, tracking
        self.log = logger or log  # the operator passes its task logger
        self.control = control or RunControl()
        self.on_trial = on_trial
        self.tracker: TuningTracker | None = None
        self.unwritten: list[Write] = []  # MLflow writes that never succeeded within retry_timeout
        self.last_write_error: str | None = None
        self.refused_metrics: set[str] = set()  # objective metric names MLflow would refuse, logged once
        self.fence_check_s = FENCE_CHECK_S
        self._fence_checked = time.monotonic()

    @property
    def mlflow_info(self) -> dict[str, str]:
        """``tracking_uri``, ``experiment_id`` and ``run_id`` of the parent run (empty before ``run``)."""
        if self.tracker is None:
            return {"tracking_uri": redact_uri(self.options.tracking_uri), "experiment_id": "", "run_id": ""}
        return {**self.tracker.info, "tracking_uri": redact_uri(self.tracker.info["tracking_uri"])}

    def redact(self, text: str) -> str:
        """Secrets out of a text bound for MLflow or the log: the caller's masker, then URI credentials."""
        masked = self.options.redact(text) if self.options.redact is not None else text
        return redact_text(str(masked))

    def _redacted(self, record: TrialRecord) -> TrialRecord:
        """A trial's error text (an objective's traceback may quote a secret) through ``redact``."""
        if not record.error:
            return record
        return dataclasses.replace(record, error=self.redact(record.error))

    def run(
        self,
        spark: Any,
        *,
        stop_spark: Callable[[], None] | None = None,
        started_at: float | None = None,
    ) -> TuningResult:
        """Start the parent run, read earlier runs, tune on ``spark`` and record everything.

        ``spark``: a SparkSession, or a call that makes one. The call runs in a thread while the
        parent run is created and earlier runs are read, so the JVM start and the MLflow set-up
        overlap; an unreachable tracking server is still refused before it is made. ``stop_spark``
        is called once the trials are over: after a failed run's parent run is closed, before a
        finished run's last MLflow writes are waited for. ``started_at``: the epoch time the
        result's ``startup_s`` counts from (default: now; the operator passes its task's start).
        """
        from airflow_provider_sparktune.tracking.store import is_server_uri, telemetry_off_unless_asked

        telemetry_off_unless_asked()  # before MLflow is imported
        from airflow_provider_sparktune.tracking.tracker import check_reachable, client_settings
        from airflow_provider_sparktune.tracking.write_queue import SERVER_WRITERS, RetryingWriter

        started_at = time.time() if started_at is None else started_at
        facts = self.prepared.facts
        self.log.info(
            "search space: %d hyperparameters (%d ordinal, %d categorical, breadth %d)",
            facts.n_hyperparameters,
            facts.n_ordinal,
            facts.n_categorical,
            facts.categorical_breadth,
        )
        uri = self.options.tracking_uri
        with client_settings():
            check_reachable(uri)  # before a cluster is asked for executors
            starting = SparkStart(spark)
            tracker: TuningTracker | None = None
            writer = RetryingWriter(workers=SERVER_WRITERS if is_server_uri(uri) else 1)
            try:
                mlflow_started = time.monotonic()
                tracker = self.tracker = self._start_tracking()
                resume = self._resume(tracker)
                warm = self._warm_start(tracker, resume)
                mlflow_s = time.monotonic() - mlflow_started
                session = starting.wait()
                if callable(spark):  # a session given as it is took no start-up here
                    self.log.info(
                        "start-up: MLflow parent run and history %.1f s, SparkSession %.1f s, side by side",
                        mlflow_s,
                        starting.duration_s,
                    )
                result = execute_run(
                    self.prepared,
                    session,
                    on_trial=lambda record, progress: self._report_trial(writer, tracker, record, progress),
                    control=self.control,
                    on_start=lambda spec, _facts: self._log_budget(writer, tracker, spec),
                    resume=resume,
                    warm_start=warm,
                    started_at=started_at,
                    room=writer.wait_for_room,  # back-pressure: trials wait for a full write queue
                )
                trials_over = time.monotonic()
                result = dataclasses.replace(result, records=tuple(map(self._redacted, result.records)))
                submit_closing_writes(writer, tracker, result)
            except BaseException as err:
                if tracker is None:  # MLflow refused the run: no trial ran, nothing to close
                    writer.close(0)
                    starting.wait_quietly()
                else:
                    self._close_failed(writer, tracker, err)
                raise
            finally:
                self._stop_spark(stop_spark)
            self._settle_writes(writer, writer.close(self.options.retry_timeout))
        if tracker.superseded_by is not None:
            raise self._superseded_error(tracker)
        result = dataclasses.replace(result, drain_s=time.monotonic() - trials_over)
        _log_result(self.log, result)
        return result

    def _superseded_error(self, tracker: TuningTracker) -> TrackingError:
        return TrackingError(
            f"this try's MLflow run {tracker.run_id} was closed by a later try of the same run (MLflow run "
            f"{tracker.superseded_by}) while it was still going: its finished trial runs stay for a later try "
            "to resume; its summary and final status are not written"
        )

    def _check_fence(self, tracker: TuningTracker) -> None:
        """Stop this try once a later try has taken over (it closed this try's parent run).

        A store that does not answer is logged by the tracker (a warning, then an error that the
        fence is off) and not raised: the trial writes wait for the store, this check need not.
        """
        if tracker.poll_superseded(self.redact, self.log):
            self.log.error("%s; stopping this try", self._superseded_error(tracker))
            self.control.cancel(f"superseded by MLflow run {tracker.superseded_by}, a later try of this run")

    def _stop_spark(self, stop_spark: Callable[[], None] | None) -> None:
        """Stop Spark; a failure to do so is logged, never raised: the run's own outcome and its
        MLflow writes (the parent run's closing status among them) come first."""
        if stop_spark is None:
            return
        try:
            stop_spark()
        except Exception:
            self.log.exception("stopping Spark failed; the run's result and its MLflow writes go on")

    def _close_failed(self, writer: RetryingWriter, tracker: TuningTracker, err: BaseException) -> None:
        error = self.redact(f"{type(err).__name__}: {err}")
        if isinstance(err, TuningCancelledError) or self.control.cancel_requested:
            # the parent first: SIGKILL may follow soon, while trial writes finish
            tracker.end("KILLED", error)
            left = writer.close(min(KILL_FLUSH_S, self.options.retry_timeout))
        else:
            left = writer.close(self.options.retry_timeout)
            tracker.end("FAILED", error)
        self._settle_writes(writer, left)

    def _settle_writes(self, writer: RetryingWriter, left: list[Write]) -> None:
        """Keep the writes MLflow never took, and log each as JSON: whatever the caller does next
        (fail the task, return the result), nothing computed is lost."""
        self.unwritten, self.last_write_error = left, writer.last_error
        if left:
            self.log.error("%s", self.unwritten_error("each is in this log as JSON, below"))
            self.log.error("unwritten MLflow writes of this run, as JSON: %s", unwritten_json(left))

    def _start_tracking(self) -> TuningTracker:
        from airflow_provider_sparktune.tracking.tracker import TuningTracker

        options = self.options
        tracker = TuningTracker(options.tracking_uri, options.experiment)
        declared = self.prepared.declared_space
        declarative = (
            declared is not None and not isinstance(declared, str) and json_native(declared) == declared
        )
        tags = {
            **options.tags,
            **options.try_tags,
            schema.TUNING_KEY: options.key,
            schema.SEARCH_SPACE: json.dumps(declared) if declarative else repr(declared),
        }
        tracker.start(run_name=options.run_name, tags=tags, search_space=declared if declarative else None)
        self.log.info(
            "MLflow run %s in experiment %s at %s",
            tracker.run_id,
            tracker.experiment_id,
            options.tracking_uri,
        )
        return tracker

    def _resume(self, tracker: TuningTracker) -> list[EarlierTrial]:
        """Finished trials of earlier tries of this run; the new parent run links to theirs."""
        from airflow_provider_sparktune.tracking.history import earlier_tries
        from airflow_provider_sparktune.tuning.earlier_trials import split_fitting

        attempt = self.options.try_tags
        if not attempt:
            return []
        tries = earlier_tries(
            tracker.client, tracker.experiment_id, attempt_tags=attempt, current_parent=tracker.run_id
        )
        if not tries.parent_run_ids:
            return []
        kept, dropped = split_fitting(self.prepared.space, tries.trials)
        for trial, reason in dropped:
            self.log.warning("not resuming trial run %s: %s", trial.source_run_id, reason)
        for parent in tries.still_running:  # a try killed without cleanup, or still alive, left its run open
            if tracker.supersede(parent):
                self.log.warning("closed the earlier try's MLflow run %s, left RUNNING, as FAILED", parent)
        tracker.set_tags(
            {schema.RESUMED_FROM: ",".join(tries.parent_run_ids), schema.RESUMED_TRIALS: len(kept)}
        )
        self.log.info(
            "resuming %d finished trial(s) of %d earlier tr%s (MLflow run(s) %s)",
            len(kept),
            len(tries.parent_run_ids),
            "y" if len(tries.parent_run_ids) == 1 else "ies",
            ", ".join(tries.parent_run_ids),
        )
        return kept

    def _warm_start(self, tracker: TuningTracker, resume: list[EarlierTrial]) -> list[EarlierTrial]:
        """The best points of the latest successful runs of the tuning key that fit today's space."""
        from airflow_provider_sparktune.tracking.history import point_key, warm_start_source
        from airflow_provider_sparktune.tuning.earlier_trials import split_fitting

        options = self.options
        if not options.warm_start:
            return []
        excludes = options.warm_start_excludes
        source = warm_start_source(
            tracker.client,
            tracker.experiment_id,
            tuning_key=options.key,
            k=options.warm_start_k,
            exclude_tags=options.try_tags if excludes is None else excludes,
        )
        kept, dropped = split_fitting(self.prepared.space, source.points)
        for trial, reason in dropped:
            self.log.warning(
                "warm start: dropping point %s of trial run %s: %s", trial.vals, trial.source_run_id, reason
            )
        done = {point_key(trial.vals) for trial in resume}  # evaluated by an earlier try already
        kept = [trial for trial in kept if point_key(trial.vals) not in done]
        tracker.set_tags(
            {
                schema.WARM_START_FROM: ",".join(source.parent_run_ids),
                schema.WARM_START_TRIALS: len(kept),
                schema.WARM_START_DROPPED: [
                    {"source_run": t.source_run_id, "vals": t.vals, "reason": r} for t, r in dropped
                ],
            }
        )
        self.log.info(
            "warm start from %d earlier run(s) of %s: %d point(s) first, %d dropped as outside today's space",
            len(source.parent_run_ids),
            options.key,
            len(kept),
            len(dropped),
        )
        return kept

    def _log_budget(self, writer: RetryingWriter, tracker: TuningTracker, spec: TuningSpec) -> None:
        declared = self.prepared.spec
        self.log.info(
            "tuning with max_evals=%d%s parallelism=%d%s algo=%s seed=%s",
            spec.max_evals,
            " (auto)" if declared.max_evals == "auto" else "",
            spec.parallelism,
            " (auto)" if declared.parallelism == "auto" else "",
            spec.algo,
            spec.seed,
        )
        extra: dict[str, Any] = {}
        staged = self.prepared.staged
        plan = staged.plan if staged is not None else None
        if plan is None:
            self.log.info("no data staged: the objective gets data=None")
            extra["staging_mode"] = "none"
            writer.submit(
                "run parameters", lambda: tracker.log_spec(spec, extra), data=spec_data(spec, extra)
            )
            return
        self.log.info(
            "data %s (%s, %d bytes, threshold %d bytes) staged by %s: %s",
            plan.safe_uri,
            plan.format,
            plan.size_bytes,
            plan.threshold_bytes,
            plan.mode,
            plan.reason,
        )
        extra.update(
            {
                "staging_mode": plan.mode,
                "staging_uri": str(plan.safe_uri),
                "staging_format": plan.format,
                "staging_size_bytes": plan.size_bytes,
                "staging_threshold_bytes": plan.threshold_bytes,
            }
        )
        writer.submit("run parameters", lambda: tracker.log_spec(spec, extra), data=spec_data(spec, extra))
        staged_plan = redact_values(plan.to_dict())
        writer.submit("staging plan", lambda: tracker.log_staging(staged_plan), data=staged_plan)

    def _report_trial(
        self, writer: RetryingWriter, tracker: TuningTracker, record: TrialRecord, progress: Progress
    ) -> None:
        record = self._redacted(record)
        if record.status == "pruned":
            outcome = f"at step {record.pruned_step} loss={record.loss:.6g}"
        elif record.loss is not None:
            outcome = f"loss={record.loss:.6g}"
        else:
            lines = (record.error or "").strip().splitlines()
            outcome = f"error={lines[-1] if lines else 'unknown'}"
        best = "n/a" if progress.best_loss is None else f"{progress.best_loss:.6g}"
        self.log.info(
            "trial %d/%d %s%s %s best=%s elapsed=%.1fs",
            progress.finished,
            progress.max_evals,
            record.status,
            " (warm start)" if record.origin == "warm_start" else "",
            outcome,
            best,
            progress.elapsed_s,
        )
        written = self._without_refused_metrics(record)
        writer.submit(f"trial {record.tid}", tracker.trial_write(written), data=record.to_dict())
        if time.monotonic() - self._fence_checked >= self.fence_check_s:
            self._fence_checked = time.monotonic()
            writer.submit("superseded check", lambda: self._check_fence(tracker))
        if self.on_trial is not None:
            self.on_trial(record, progress)

    def _without_refused_metrics(self, record: TrialRecord) -> TrialRecord:
        """The record with only the metrics MLflow accepts: one bad name would fail the whole trial run.

        Each refused name is logged once, with the fix; the record itself (XCom, trials.json) keeps it.
        """
        from airflow_provider_sparktune.tracking.names import name_problem, suggested_name

        refused = {name: name_problem(name) for name in record.metrics if name_problem(name) is not None}
        if not refused:
            return record
        for name, problem in refused.items():
            if name not in self.refused_metrics:
                self.refused_metrics.add(name)
                self.log.error(
                    "objective metrics.%s (first in trial %d): %s; rename it in the objective's metrics, "
                    "e.g. %r: trial runs are written to MLflow without it",
                    name,
                    record.tid,
                    problem,
                    suggested_name(name),
                )
        kept = {name: value for name, value in record.metrics.items() if name not in refused}
        return dataclasses.replace(record, metrics=kept)

    def unwritten_error(self, where: str) -> TrackingError:
        """The error for writes that never reached MLflow; ``where`` says where the results are instead."""
        writes = self.unwritten
        return TrackingError(
            f"mlflow_conn_id: {len(writes)} write(s) ({', '.join(w.what for w in writes[:5])}"
            f"{', ...' if len(writes) > 5 else ''}) never reached {redact_uri(self.options.tracking_uri)} within "
            f"mlflow_retry_timeout={self.options.retry_timeout} s (last error: {self.last_write_error}); {where}"
        )


def spec_data(spec: TuningSpec, extra: Mapping[str, Any]) -> Any:
    return json_native({**spec.as_params(), **extra})


def unwritten_json(writes: list[Write]) -> str:
    """Writes that never reached MLflow, as one JSON list: enough for a person or a script to redo them."""
    return json.dumps(
        [{"write": w.what, "data": json_native(w.data)} for w in writes], separators=(",", ":"), default=repr
    )


def submit_closing_writes(writer: RetryingWriter, tracker: TuningTracker, result: TuningResult) -> None:
    """Queue what ends a finished run: its summary ahead of the trial runs still queued, so the loss
    plot and artifacts are written beside them; the Pareto front's marks and the FINISHED status
    once every write is in."""
    writer.submit("run summary", tracker.summary_write(result), ahead=True)
    if result.pareto_front:
        writer.submit("marking the Pareto front", tracker.front_marks(result), after_all=True)
    writer.submit("closing the run", tracker.close_finished, after_all=True)


def _log_result(logger: Any, result: TuningResult) -> None:
    logger.info(
        "best loss %s after %d trials (%d ok, %d failed, %d cancelled, %d pruned; %d lost and re-run), "
        "stopped by %s: %s",
        json_native(result.best_loss),
        result.trials_total,
        result.trials_ok,
        result.trials_failed,
        result.trials_cancelled,
        result.trials_pruned,
        result.trials_lost,
        result.stopped_reason,
        json_native(result.best_params),
    )
    logger.info(
        "efficiency %.2f (time in objectives / parallelism x wall), %.3f s idle slot time per trial",
        result.efficiency,
        result.trial_overhead_s,
    )
    if result.startup_s is not None:
        logger.info("start-up: the first trial started %.2f s after the run began", result.startup_s)
    if result.drain_s is not None:
        logger.info("MLflow writes drained %.2f s after the last trial", result.drain_s)


def run_tuning(
    search_space: Any,
    objective: Any,
    *,
    spark: Any,
    on_trial: TrialCallback | None = None,
    control: RunControl | None = None,
    tracking: TrackingOptions | None = None,
    **settings: Any,
) -> TuningResult:
    """Tune ``objective`` over ``search_space`` on ``spark`` and return the best point.

    ``settings`` are those of :func:`~airflow_provider_sparktune.tuning.prepare.prepare_run` (max_evals, parallelism, algo, seed, timeout,
    loss_threshold, early_stop_after, dispatcher, max_failed_trials, max_failure_ratio,
    objective_kwargs, data). ``data`` may be a ``StagingPlan`` or a ``StagedData``: the objective
    then reads ``data.value`` however the data was staged. Everything that can be checked without
    Spark is checked first. ``on_trial`` is called on the driver, off the dispatch path, once per
    finished trial. With ``tracking``, the run is a :class:`TuningSession`: MLflow parent and trial
    runs, resume of earlier tries with the same ``run_key`` and, if asked, a warm start.
    """
    started_at = time.time()
    prepared = prepare_run(search_space, objective, **settings)
    if tracking is None:
        return execute_run(prepared, spark, on_trial=on_trial, control=control, started_at=started_at)
    session = TuningSession(prepared, tracking, control=control, on_trial=on_trial)
    return session.run(spark, started_at=started_at)  # unwritten writes: logged by the session


__all__ = ["TrackingOptions", "TuningSession", "run_tuning"]
