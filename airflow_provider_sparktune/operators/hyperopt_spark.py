"""HyperoptSparkOperator: one DAG task that tunes a model with hyperopt SparkTrials and MLflow."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_sparktune import arguments
from airflow_provider_sparktune.exceptions import TrackingError, TuningCancelledError, TuningConfigError
from airflow_provider_sparktune.hooks.mlflow import MlflowHook
from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook
from airflow_provider_sparktune.hooks.staging import DataStagingHook
from airflow_provider_sparktune.links import MlflowRunLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_sparktune.durable import RetryingWriter
    from airflow_provider_sparktune.engine import (
        PreparedRun,
        Progress,
        RunControl,
        TrialRecord,
        TuningSpec,
    )
    from airflow_provider_sparktune.prior import PriorTrial
    from airflow_provider_sparktune.staging import StagedData, StagingPlan
    from airflow_provider_sparktune.tracking import TuningTracker

_INT_FIELDS = ("max_evals", "parallelism", "seed", "early_stop_after", "max_failed_trials")
_FLOAT_FIELDS = ("timeout", "loss_threshold", "max_failure_ratio")
# On a kill, how long queued trial writes may take once the parent run is closed KILLED. The parent is
# closed first because the Airflow task supervisor follows its SIGTERM with SIGKILL 5 s later.
KILL_FLUSH_S = 10.0


class HyperoptSparkOperator(BaseOperator):
    """Tune hyperparameters with ``hyperopt.fmin`` + ``SparkTrials`` on the cluster of a Spark connection.

    Every finished trial is logged to MLflow as a child run of this task try's parent run; the
    return value (XCom) holds the best parameters, the trial counts and where the runs are.

    :param search_space: declarative space (dict or JSON text, templated) or a hyperopt expression.
    :param objective: ``"package.module:function"``, a callable ``f(params, data=None, **kwargs)``, or the
        built-in estimator objective ``{"estimator": "sklearn.ensemble....", "target": "label", ...}``.
    :param objective_kwargs: keyword arguments for the objective (templated, must pickle).
    :param max_evals: number of trials, or ``"auto"`` (20 x ordinal + 15 x categorical breadth).
    :param parallelism: trials at once, or ``"auto"`` (2 x hyperparameters, capped by task slots and 128).
    :param algo: ``tpe``, ``rand``, ``anneal`` or ``atpe``.
    :param seed: makes suggestions reproducible per trial id.
    :param timeout: seconds after which running trials are cancelled and the best so far returned.
    :param loss_threshold: stop once a trial reaches this loss or lower.
    :param early_stop_after: stop after this many finished ok trials without improvement.
    :param dispatcher: ``resident`` (long-lived Spark tasks pull trials; the fast default) or
        ``sparktrials`` (hyperopt's own SparkTrials loop, one Spark job per trial).
    :param spark_conn_id: Airflow connection of type ``spark``; missing -> Spark ``local[*]``.
    :param spark_conf: extra Spark conf, applied over the connection's.
    :param spark_connect_timeout: seconds to wait for executors on a cluster master.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``; missing -> ``MLFLOW_TRACKING_URI`` or
        a SQLite store under AIRFLOW_HOME.
    :param mlflow_experiment: experiment name (templated); default ``"<dag_id>.<task_id>"``.
    :param data: the training data (templated): a dataset URI (planned here) or the staging plan a
        StagedDataSensor returned (dict or JSON text). The objective reads ``data.value``.
    :param data_format: ``parquet``, ``csv``, ``npy`` or ``npz`` when the URI does not say (templated).
    :param broadcast_threshold_bytes: broadcast below this size, reload at or above; default 2 GiB, or the
        plan's own threshold when ``data`` is a plan (templated).
    :param data_conn_id: optional connection of type ``fsspec`` with the storage credentials.
    :param warm_start: start from the best points of the latest successful runs of ``tuning_key``
        (templated); ``None`` (default): on for scheduled DAG runs, off for manual ones.
    :param warm_start_k: how many best points a warm start evaluates first (templated).
    :param tuning_key: what a warm start matches earlier runs by; default ``"<dag_id>.<task_id>"``.
    :param max_failed_trials: stop early with an error after this many failed trials (templated);
        ``"auto"``: after max(3, parallelism) failures before any success; ``None``: never.
    :param max_failure_ratio: stop early with an error once more than this share of trials failed.
    :param mlflow_retry_timeout: seconds to keep retrying MLflow writes after the last trial.
    """

    template_fields: Sequence[str] = (
        "search_space",
        "objective_kwargs",
        "max_evals",
        "parallelism",
        "seed",
        "timeout",
        "loss_threshold",
        "early_stop_after",
        "spark_conf",
        "mlflow_experiment",
        "data",
        "data_format",
        "broadcast_threshold_bytes",
        "warm_start",
        "warm_start_k",
        "max_failed_trials",
        "max_failure_ratio",
    )
    template_fields_renderers = {
        "search_space": "json",
        "objective_kwargs": "json",
        "spark_conf": "json",
        "data": "json",
    }
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        search_space: Any,
        objective: Any,
        objective_kwargs: Mapping[str, Any] | str | None = None,
        max_evals: int | str = "auto",
        parallelism: int | str = "auto",
        algo: str = "tpe",
        seed: int | str | None = None,
        timeout: float | str | None = None,
        loss_threshold: float | str | None = None,
        early_stop_after: int | str | None = None,
        dispatcher: str = "resident",
        spark_conn_id: str = SparkSessionHook.default_conn_name,
        spark_conf: Mapping[str, Any] | None = None,
        spark_connect_timeout: float | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        mlflow_experiment: str | None = None,
        data: str | Mapping[str, Any] | None = None,
        data_format: str | None = None,
        broadcast_threshold_bytes: int | str | None = None,
        data_conn_id: str | None = DataStagingHook.default_conn_name,
        warm_start: bool | str | None = None,
        warm_start_k: int | str = 5,
        tuning_key: str | None = None,
        max_failed_trials: int | str | None = "auto",
        max_failure_ratio: float | str | None = None,
        mlflow_retry_timeout: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.search_space = search_space
        self.objective = objective
        self.objective_kwargs = objective_kwargs
        self.max_evals = max_evals
        self.parallelism = parallelism
        self.algo = algo
        self.seed = seed
        self.timeout = timeout
        self.loss_threshold = loss_threshold
        self.early_stop_after = early_stop_after
        self.dispatcher = dispatcher
        self.spark_conn_id = spark_conn_id
        self.spark_conf = spark_conf
        self.spark_connect_timeout = spark_connect_timeout
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_experiment = mlflow_experiment
        self.data = data
        self.data_format = data_format
        self.broadcast_threshold_bytes = broadcast_threshold_bytes
        self.data_conn_id = data_conn_id
        self.warm_start = warm_start
        self.warm_start_k = warm_start_k
        self.tuning_key = tuning_key
        self.max_failed_trials = max_failed_trials
        self.max_failure_ratio = max_failure_ratio
        self.mlflow_retry_timeout = mlflow_retry_timeout
        self._control: RunControl | None = None
        self._staged: StagedData | None = None

    @cached_property
    def spark_hook(self) -> SparkSessionHook:
        return SparkSessionHook(
            self.spark_conn_id,
            spark_conf=self.spark_conf,
            app_name=f"sparktune-{self.dag_id}.{self.task_id}",
            connect_timeout=self.spark_connect_timeout,
        )

    @cached_property
    def mlflow_hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def _threshold_given(self) -> bool:
        value = self.broadcast_threshold_bytes
        return value is not None and not (isinstance(value, str) and value.strip() in ("", "None", "null"))

    @cached_property
    def staging_hook(self) -> DataStagingHook:
        if not self._threshold_given():
            return DataStagingHook(self.data_conn_id)
        return DataStagingHook(self.data_conn_id, broadcast_threshold_bytes=self.broadcast_threshold_bytes)  # type: ignore[arg-type]

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "algo": self.algo,
            "dispatcher": self.dispatcher,
            "objective_kwargs": self.objective_kwargs,
        }
        for name in _INT_FIELDS:
            settings[name] = arguments.coerce(name, getattr(self, name), int)
        for name in _FLOAT_FIELDS:
            settings[name] = arguments.coerce(name, getattr(self, name), float)
        return settings

    def _check_arguments(self) -> None:
        """The operator's own arguments (the engine checks the budget): fail before any I/O."""
        arguments.name("spark_conn_id", self.spark_conn_id, allow_none=False)
        arguments.name("mlflow_conn_id", self.mlflow_conn_id, allow_none=False)
        arguments.name("mlflow_experiment", self.mlflow_experiment)
        arguments.mapping("spark_conf", self.spark_conf)
        arguments.positive_number("spark_connect_timeout", self.spark_connect_timeout)
        arguments.positive_number("mlflow_retry_timeout", self.mlflow_retry_timeout, allow_none=False)
        arguments.flag("warm_start", self.warm_start, allow_none=True)
        k = arguments.coerce("warm_start_k", self.warm_start_k, int)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TuningConfigError(f"warm_start_k: {self.warm_start_k!r} must be a positive integer")
        arguments.tuning_key(self.tuning_key)
        self.spark_conf = arguments.mapping("spark_conf", self.spark_conf)

    def execute(self, context: Context) -> dict[str, Any]:
        import json

        from airflow_provider_sparktune.durable import RetryingWriter
        from airflow_provider_sparktune.engine import RunControl, execute_run, prepare_run
        from airflow_provider_sparktune.results import to_xcom
        from airflow_provider_sparktune.space import is_hyperopt_expression, parse_space_spec
        from airflow_provider_sparktune.tracking import client_settings, log_through_root

        log_through_root()
        logging.getLogger("hyperopt.tpe").setLevel(logging.WARNING)  # two lines per suggestion otherwise
        self._check_arguments()
        space_spec = (
            self.search_space
            if is_hyperopt_expression(self.search_space)
            else parse_space_spec(self.search_space)
        )
        self._staged = self._open_data()
        prepared = prepare_run(space_spec, self.objective, data=self._staged, **self._settings())
        self.log.info(
            "search space: %d hyperparameters (%d ordinal, %d categorical, breadth %d)",
            prepared.facts.n_hyperparameters,
            prepared.facts.n_ordinal,
            prepared.facts.n_categorical,
            prepared.facts.categorical_breadth,
        )
        self.spark_hook.resolve()  # connection type, master and conf are checked before MLflow is touched
        self._control = control = RunControl()
        with self.mlflow_hook.credentials(), client_settings():
            tracker = self._start_tracking(context, space_spec)
            writer = RetryingWriter()
            try:
                resume = self._resume(context, tracker, prepared)
                warm = self._warm_start(context, tracker, prepared, resume)
                spark = self.spark_hook.get_session()
                result = execute_run(
                    prepared,
                    spark,
                    on_trial=lambda record, progress: self._report_trial(writer, tracker, record, progress),
                    control=control,
                    on_start=lambda spec, facts: self._log_budget(writer, tracker, spec),
                    resume=resume,
                    warm_start=warm,
                )
                writer.submit("run summary", tracker.finish_write(result))
            except BaseException as err:
                killed = isinstance(err, TuningCancelledError) or control.cancel_requested
                if killed:  # the parent first: SIGKILL may follow soon, while trial writes finish
                    tracker.end("KILLED", f"{type(err).__name__}: {err}")
                    writer.close(min(KILL_FLUSH_S, float(self.mlflow_retry_timeout)))
                else:
                    writer.close(30.0)
                    tracker.end("FAILED", f"{type(err).__name__}: {err}")
                raise
            finally:
                self.spark_hook.stop()
            unwritten = writer.close(float(self.mlflow_retry_timeout))
        staging = self._staged.plan.to_dict() if self._staged is not None else None
        value = to_xcom(result, mlflow=tracker.info, staging=staging)
        self.log.info(
            "best loss %s after %d trials (%d ok, %d failed, %d cancelled), stopped by %s: %s",
            value["best_loss"],
            result.trials_total,
            result.trials_ok,
            result.trials_failed,
            result.trials_cancelled,
            result.stopped_reason,
            value["best_params"],
        )
        self.log.info(
            "efficiency %.2f (time in objectives / parallelism x wall), %.3f s idle slot time per trial",
            result.efficiency,
            result.trial_overhead_s,
        )
        context["ti"].xcom_push(key="best_params", value=value["best_params"])
        if unwritten:
            context["ti"].xcom_push(key="return_value", value=value)
            self.log.error(
                "every trial of this run, as JSON: %s", json.dumps([r.to_dict() for r in result.records])
            )
            raise TrackingError(
                f"mlflow_conn_id: {len(unwritten)} write(s) ({', '.join(w.what for w in unwritten[:5])}"
                f"{', ...' if len(unwritten) > 5 else ''}) never reached {tracker.tracking_uri} within "
                f"mlflow_retry_timeout={self.mlflow_retry_timeout} s (last error: {writer.last_error}); the best "
                "result is in XCom and every trial is in this task log as JSON"
            )
        return value

    def _resume(self, context: Context, tracker: TuningTracker, prepared: PreparedRun) -> list[PriorTrial]:
        """Finished trials of earlier tries of this task instance; the new parent run links to theirs."""
        from airflow_provider_sparktune.history import earlier_tries
        from airflow_provider_sparktune.prior import split_fitting

        tries = earlier_tries(
            tracker.client,
            tracker.experiment_id,
            dag_id=self.dag_id,
            task_id=self.task_id,
            run_id=str(context.get("run_id", "")),
            current_parent=tracker.run_id,
        )
        if not tries.parent_run_ids:
            return []
        kept, dropped = split_fitting(prepared.space, tries.trials)
        for trial, reason in dropped:
            self.log.warning("not resuming trial run %s: %s", trial.source_run_id, reason)
        for parent in tries.still_running:  # a try killed without cleanup left its run open
            tracker.set_tags({"sparktune.superseded_by": tracker.run_id}, run_id=parent)
            tracker.client.set_terminated(parent, status="FAILED")
        tracker.set_tags(
            {"sparktune.resumed_from": ",".join(tries.parent_run_ids), "sparktune.resumed_trials": len(kept)}
        )
        self.log.info(
            "resuming %d finished trial(s) of %d earlier tr%s (MLflow run(s) %s)",
            len(kept),
            len(tries.parent_run_ids),
            "y" if len(tries.parent_run_ids) == 1 else "ies",
            ", ".join(tries.parent_run_ids),
        )
        return kept

    def _warm_start_enabled(self, context: Context) -> bool:
        enabled = arguments.flag("warm_start", self.warm_start, allow_none=True)
        if enabled is not None:
            return enabled
        dag_run = context.get("dag_run")
        run_type = str(getattr(dag_run, "run_type", "") or "")
        return run_type.lower().endswith("scheduled")

    def _warm_start(
        self, context: Context, tracker: TuningTracker, prepared: PreparedRun, resume: list[PriorTrial]
    ) -> list[PriorTrial]:
        """The best points of the latest successful runs of the tuning key that fit today's space."""
        from airflow_provider_sparktune.history import point_key, warm_start_source
        from airflow_provider_sparktune.prior import split_fitting

        if not self._warm_start_enabled(context):
            return []
        source = warm_start_source(
            tracker.client,
            tracker.experiment_id,
            tuning_key=self._tuning_key,
            k=int(arguments.coerce("warm_start_k", self.warm_start_k, int)),
            exclude_airflow_run_id=str(context.get("run_id", "")),
        )
        kept, dropped = split_fitting(prepared.space, source.points)
        for trial, reason in dropped:
            self.log.warning(
                "warm start: dropping point %s of trial run %s: %s", trial.vals, trial.source_run_id, reason
            )
        done = {point_key(trial.vals) for trial in resume}  # evaluated by an earlier try already
        kept = [trial for trial in kept if point_key(trial.vals) not in done]
        tracker.set_tags(
            {
                "sparktune.warm_start.from_runs": ",".join(source.parent_run_ids),
                "sparktune.warm_start.trials": len(kept),
                "sparktune.warm_start.dropped": [
                    {"source_run": t.source_run_id, "vals": t.vals, "reason": r} for t, r in dropped
                ],
            }
        )
        self.log.info(
            "warm start from %d earlier run(s) of %s: %d point(s) first, %d dropped as outside today's space",
            len(source.parent_run_ids),
            self._tuning_key,
            len(kept),
            len(dropped),
        )
        return kept

    @property
    def _tuning_key(self) -> str:
        return self.tuning_key or f"{self.dag_id}.{self.task_id}"

    def _start_tracking(self, context: Context, space_spec: Any) -> TuningTracker:
        import json

        from airflow_provider_sparktune.results import json_native
        from airflow_provider_sparktune.tracking import TuningTracker, check_reachable

        uri = self.mlflow_hook.get_tracking_uri()
        check_reachable(uri)
        tracker = TuningTracker(uri, self.mlflow_experiment or f"{self.dag_id}.{self.task_id}")
        ti = context["ti"]
        declarative = not isinstance(space_spec, str) and json_native(space_spec) == space_spec
        tags = {
            "airflow.dag_id": self.dag_id,
            "airflow.task_id": self.task_id,
            "airflow.run_id": context.get("run_id", ""),
            "airflow.try_number": str(getattr(ti, "try_number", "")),
            "sparktune.tuning_key": self._tuning_key,
            "sparktune.search_space": json.dumps(space_spec) if declarative else repr(space_spec),
        }
        run_name = f"{self.task_id} {context.get('run_id', '')} try {tags['airflow.try_number']}"
        tracker.start(run_name=run_name, tags=tags, search_space=space_spec if declarative else None)
        self.log.info("MLflow run %s in experiment %s at %s", tracker.run_id, tracker.experiment_id, uri)
        return tracker

    def _log_budget(self, writer: RetryingWriter, tracker: TuningTracker, spec: TuningSpec) -> None:
        self.log.info(
            "tuning with max_evals=%d%s parallelism=%d%s algo=%s seed=%s",
            spec.max_evals,
            " (auto)" if self.max_evals == "auto" else "",
            spec.parallelism,
            " (auto)" if self.parallelism == "auto" else "",
            spec.algo,
            spec.seed,
        )
        extra: dict[str, Any] = {
            "max_failed_trials": spec.max_failed_trials,
            "max_failure_ratio": spec.max_failure_ratio,
        }
        plan = self._staged.plan if self._staged is not None else None
        if plan is None:
            self.log.info("no data staged: the objective gets data=None")
            extra["staging_mode"] = "none"
            writer.submit("run parameters", lambda: tracker.log_spec(spec, extra))
            return
        self.log.info(
            "data %s (%s, %d bytes, threshold %d bytes) staged by %s: %s",
            plan.uri,
            plan.format,
            plan.size_bytes,
            plan.threshold_bytes,
            plan.mode,
            plan.reason,
        )
        extra.update(
            {
                "staging_mode": plan.mode,
                "staging_uri": plan.uri,
                "staging_format": plan.format,
                "staging_size_bytes": plan.size_bytes,
                "staging_threshold_bytes": plan.threshold_bytes,
            }
        )
        writer.submit("run parameters", lambda: tracker.log_spec(spec, extra))
        writer.submit("staging plan", lambda: tracker.log_staging(plan.to_dict()))

    def _open_data(self) -> StagedData | None:
        """``data`` as a checked handle: a URI is planned here, a sensor's plan is used as it is."""
        from airflow_provider_sparktune.staging import StagingPlan
        from airflow_provider_sparktune.storage import normalize_uri

        data = self.data
        if isinstance(data, str):
            data = data.strip()
            if data in ("", "None", "null"):
                return None
        if data is None:
            return None
        if isinstance(data, str) and not data.startswith("{"):
            plan = self.staging_hook.plan(normalize_uri(data), format=self.data_format or None)
        else:
            plan = self._plan_from_sensor(StagingPlan.from_value(data, "data"))
        return self.staging_hook.open(plan)

    def _plan_from_sensor(self, plan: StagingPlan) -> StagingPlan:
        if not self._threshold_given():
            return plan
        threshold = self.staging_hook.threshold_bytes
        if threshold == plan.threshold_bytes:
            return plan
        self.log.info(
            "data %s: deciding again with broadcast_threshold_bytes=%d (the sensor used %d)",
            plan.uri,
            threshold,
            plan.threshold_bytes,
        )
        return plan.with_threshold(threshold)

    def _report_trial(
        self, writer: RetryingWriter, tracker: TuningTracker, record: TrialRecord, progress: Progress
    ) -> None:
        if record.loss is not None:
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
        writer.submit(f"trial {record.tid}", tracker.trial_write(record))

    def on_kill(self) -> None:
        """Cancel this task's Spark job group; no new trial starts and the MLflow run ends KILLED."""
        if self._control is not None:
            self._control.cancel("killed")
