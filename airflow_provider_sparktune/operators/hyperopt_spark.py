"""HyperoptSparkOperator: one DAG task that tunes a model on Spark, every trial tracked in MLflow."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_sparktune.hooks.mlflow import MlflowHook
from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook
from airflow_provider_sparktune.hooks.staging import DataStagingHook
from airflow_provider_sparktune.links import MlflowRunLink
from airflow_provider_sparktune.operators import arguments
from airflow_provider_sparktune.operators.masking import mask_secrets, mask_uri_secrets
from airflow_provider_sparktune.redaction import redact_uri
from airflow_provider_sparktune.tuning.spec import setting_names, templated_settings

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_sparktune.data.staged import StagedData
    from airflow_provider_sparktune.data.staging import StagingPlan
    from airflow_provider_sparktune.tuning.run import RunControl
    from airflow_provider_sparktune.tuning.session import TrackingOptions, TuningSession


def _map_index(context: Context) -> int | None:
    """This task instance's map index when it is one instance of a mapped task, else None."""
    index = getattr(context.get("ti"), "map_index", None)
    return index if isinstance(index, int) and index >= 0 else None


class HyperoptSparkOperator(BaseOperator):
    """Tune hyperparameters on the Spark cluster of a connection, with every trial tracked in MLflow.

    The search (hyperopt's TPE by default) runs on the Airflow worker; its trials run on Spark
    executors, dispatched by default to long-lived resident tasks that pull one trial after another
    (hyperopt's own ``SparkTrials`` loop on request, ``dispatcher="sparktrials"``). The training data
    is staged once: broadcast from the worker or reloaded from storage by each executor, one copy per
    host. Every finished trial is a child run of this task try's MLflow parent run; a pruner can stop
    hopeless trials early; a retry resumes earlier tries and a scheduled run warm starts from earlier
    nights. The return value (XCom, and the ``extra`` of the events of asset ``outlets``) holds the
    best parameters, the trial counts and where the runs are; ``ModelRegistryGateOperator`` takes it
    from there to the model registry.

    Every argument is keyword-only; see :doc:`/operators` for the checks made before Spark starts.

    :param search_space: declarative space (dict, or JSON text from a template), or a hyperopt
        expression; see :doc:`/objectives`.
    :param objective: ``"package.module:function"``, a callable ``f(params, data=None, **kwargs)``, or
        the built-in estimator objective spec (a dict, see :doc:`/objectives`). Not templated, so its
        import path is never read from run conf.
    :param objective_kwargs: keyword arguments for the objective (dict or JSON text); must pickle.
    :param max_evals: number of trials; ``"auto"`` = 20 x ordinal hyperparameters + 15 x total
        categorical breadth.
    :param parallelism: trials at once (1-128); ``"auto"`` = 2 x hyperparameters, capped by the
        cluster's task slots, 128 and ``max_evals``.
    :param algo: the searcher: hyperopt's ``tpe`` (default), ``rand``, ``anneal`` or ``atpe`` (atpe
        needs lightgbm), or an Optuna sampler (``optuna.tpe``, ``optuna.gp``, ``optuna.cmaes``,
        ``optuna.random``, ``optuna.qmc``, ``optuna.nsga2``; needs the ``optuna`` extra, ``optuna.gp``
        the ``optuna-gp`` extra). See :doc:`/searchers`.
    :param algo_options: the Optuna sampler's keyword arguments (dict or JSON text).
    :param directions: several named losses: ``{"error": "minimize", "latency_ms": "minimize"}``, the
        first one primary; the objective returns ``{"losses": {...}}``. See :doc:`/searchers`.
    :param seed: seeds each suggestion by (seed, trial id): the same seed gives the same points however
        trials were batched. Adaptive TPE rounds also depend on which trials had finished, so with
        ``parallelism > 1`` only the start-up (random) phase is exactly reproducible.
    :param timeout: seconds; then running trials are cancelled and the best finished one is returned.
    :param loss_threshold: stop once a trial reaches this loss or lower.
    :param early_stop_after: stop after this many finished ok trials without improvement (implemented
        outside hyperopt's ``early_stop_fn``, which can hang ``fmin`` with SparkTrials).
    :param dispatcher: how trials reach the executors: ``resident`` (the default, see
        :doc:`/performance`; classic Spark or Spark Connect) or ``sparktrials`` (hyperopt's own
        SparkTrials loop, one Spark job per trial; classic Spark only).
    :param spark_conn_id: connection of type ``spark`` (a master, or ``sc://...``) or ``spark_connect``
        (see :doc:`/cluster`). The default id, when no such connection exists: Spark ``local[*]`` on
        this worker, with a warning in the task log; any other id that does not exist fails the task.
    :param spark_conf: Spark conf applied over the connection's. What the DAG file writes out is used
        as it is. An entry that came out of a template (run conf, params, XCom) or from ``expand()``
        (a mapped task's values; what ``partial()`` writes stays the DAG file's) may set only the keys
        on the provider's allow-list of data (resources, shuffle and SQL tuning, timeouts, such as
        ``spark.executor.memory``, ``spark.sql.shuffle.partitions``, ``spark.network.timeout``), each
        to a value of its kind (a count, a size such as ``4g``, a duration such as ``120s``, a
        boolean, a fraction), and the keys in ``allowed_templated_spark_conf``; anything else
        (``spark.master``, ``spark.jars``, Java options, ...) fails the task before Spark starts.
        Every key, written or not, must be a Spark conf key (no ``=``, whitespace, quotes or control
        characters) and no value may hold a line break or NUL. See :doc:`/security`.
    :param allowed_templated_spark_conf: Spark conf keys (or glob patterns such as
        ``"spark.hadoop.fs.s3a.*"``) a rendered template or a mapped task's values may set to any
        value, beyond the provider's allow-list: the DAG author's explicit choice.
    :param spark_connect_timeout: seconds to wait for executors on a cluster master, or for a Spark
        Connect server and the tasks connecting back from it, before failing; ``None``: 60 s.
    :param mlflow_conn_id: connection of type ``mlflow``. The default id, when no such connection
        exists: ``MLFLOW_TRACKING_URI``, else ``sqlite:///$AIRFLOW_HOME/mlflow.db``, with a warning;
        any other id that does not exist fails the task.
    :param mlflow_experiment: MLflow experiment name; ``None``: ``"<dag_id>.<task_id>"``.
    :param data: the training data: a dataset URI (planned by the task), or the plan a
        ``StagedDataSensor`` returned (dict, ``sensor.output``, or its JSON/rendered text such as
        ``"{{ ti.xcom_pull(task_ids='wait_for_data') }}"``). The objective gets ``data.value``; see
        :doc:`/data-staging`.
    :param data_format: ``parquet``, ``csv``, ``npy`` or ``npz`` when the URI does not say.
    :param broadcast_threshold_bytes: broadcast below this size, reload at or above (``2147483648``,
        ``"512MiB"``, ``"2GiB"``); ``None``: 2 GiB. With a sensor's plan, ``None`` keeps the plan's
        decision and a value decides again.
    :param data_conn_id: connection of type ``fsspec`` with the storage credentials. The default id,
        when no such connection exists: fsspec's defaults, with a warning; ``None``: no connection;
        any other id that does not exist fails the task.
    :param allowed_data_prefixes: URI prefixes ``data`` must be under (``["s3://bucket/features/"]``);
        the connection extra's ``allowed_prefixes`` applies too. ``None``: any URI.
    :param warm_start: start from the best points of the latest successful runs of ``tuning_key``;
        ``None``: on for scheduled DAG runs, off for manual ones (see :doc:`/resilience`).
    :param warm_start_k: how many best points a warm start evaluates first.
    :param tuning_key: what a warm start matches earlier runs by (letters, digits, ``_ . : -``);
        ``None``: ``"<dag_id>.<task_id>"``.
    :param max_failed_trials: stop early with an error after this many failed trials; ``"auto"``: after
        max(3, parallelism) failures before any success; ``None``: never.
    :param max_failure_ratio: stop early with an error once more than this share (0-1) of the trials
        failed, judged after max(5, parallelism) trials.
    :param lost_trial_retries: how many times (0-10) a trial runs again when its Spark task is lost (an
        executor or Python worker killed, e.g. by the OOM killer) before it fails; lost attempts count
        toward neither ``max_evals`` nor ``max_failed_trials``, and XCom's ``trials.lost`` counts them.
        Resident dispatcher only: with ``sparktrials`` a lost task fails its trial.
    :param pruner: stop hopeless trials early: ``None``, ``"median"``, ``"successive_halving"``, or a
        dict with ``"name"`` and that pruner's settings (dict or JSON text); needs
        ``dispatcher="resident"``. See :doc:`/pruning`.
    :param mlflow_retry_timeout: seconds to keep retrying MLflow writes after the last trial before
        the task fails (see :doc:`/resilience`).
    :param emit_if_not_improved: with asset ``outlets``: whether a night whose best loss did not beat
        the earlier runs of ``tuning_key`` still emits its event (True: every successful night
        announces its parameters, ``improved`` in the event says which kind of night it was; False:
        only improving nights start the consumers). A failed task never emits. See :doc:`/nightly`.
    """

    template_fields: Sequence[str] = (
        "search_space",
        "objective_kwargs",
        *templated_settings(),  # the budget and search settings of TuningSpec that are templated
        "spark_conf",
        "mlflow_experiment",
        "data",
        "data_format",
        "broadcast_threshold_bytes",
        "warm_start",
        "warm_start_k",
    )
    template_fields_renderers = {
        "search_space": "json",
        "objective_kwargs": "json",
        "spark_conf": "json",
        "data": "json",
        "pruner": "json",
        "algo_options": "json",
        "directions": "json",
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
        allowed_templated_spark_conf: Sequence[str] | None = None,
        spark_connect_timeout: float | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        mlflow_experiment: str | None = None,
        data: str | Mapping[str, Any] | None = None,
        data_format: str | None = None,
        broadcast_threshold_bytes: int | str | None = None,
        data_conn_id: str | None = DataStagingHook.default_conn_name,
        allowed_data_prefixes: Sequence[str] | None = None,
        warm_start: bool | str | None = None,
        warm_start_k: int | str = 5,
        tuning_key: str | None = None,
        max_failed_trials: int | str | None = "auto",
        max_failure_ratio: float | str | None = None,
        lost_trial_retries: int | str = 2,
        pruner: str | Mapping[str, Any] | None = None,
        algo_options: Mapping[str, Any] | str | None = None,
        directions: Mapping[str, str] | str | None = None,
        mlflow_retry_timeout: float = 300.0,
        emit_if_not_improved: bool = True,
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
        self.allowed_templated_spark_conf = allowed_templated_spark_conf
        # What the DAG file wrote (rendering replaces spark_conf). A mapped task's __init__ gets the
        # values expand() resolved from XCom or run conf: none of them is the DAG author's.
        self._spark_conf_from_mapping = bool(getattr(self, "_BaseOperator__from_mapped", False))
        self._spark_conf_as_written = spark_conf
        self.spark_connect_timeout = spark_connect_timeout
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_experiment = mlflow_experiment
        self.data = data
        self.data_format = data_format
        self.broadcast_threshold_bytes = broadcast_threshold_bytes
        self.data_conn_id = data_conn_id
        self.allowed_data_prefixes = allowed_data_prefixes
        self.warm_start = warm_start
        self.warm_start_k = warm_start_k
        self.tuning_key = tuning_key
        self.max_failed_trials = max_failed_trials
        self.max_failure_ratio = max_failure_ratio
        self.lost_trial_retries = lost_trial_retries
        self.pruner = pruner
        self.algo_options = algo_options
        self.directions = directions
        self.mlflow_retry_timeout = mlflow_retry_timeout
        self.emit_if_not_improved = emit_if_not_improved
        self._result: dict[str, Any] | None = None
        self._control: RunControl | None = None

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
        return not arguments.is_unset(self.broadcast_threshold_bytes)

    @cached_property
    def staging_hook(self) -> DataStagingHook:
        if not self._threshold_given():
            return DataStagingHook(self.data_conn_id, allowed_prefixes=self.allowed_data_prefixes)
        return DataStagingHook(
            self.data_conn_id,
            broadcast_threshold_bytes=self.broadcast_threshold_bytes,  # type: ignore[arg-type]
            allowed_prefixes=self.allowed_data_prefixes,
        )

    def _settings(self) -> dict[str, Any]:
        """The TuningSpec fields, template text converted to the field's type."""
        converted = templated_settings()
        return {
            name: arguments.coerce(name, getattr(self, name), converted[name])
            if name in converted
            else getattr(self, name)
            for name in setting_names()
        }

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render, then register a data URI's own secrets with Airflow's secrets masker before the
        rendered fields are stored (the UI shows them) and before anything is logged."""
        super().render_template_fields(context, jinja_env)
        mask_uri_secrets(self.data)

    def _check_arguments(self, context: Context | None = None) -> None:
        """The operator's own arguments (the spec checks the budget): fail before any I/O."""
        from airflow_provider_sparktune.operators.spark_conf import check_templated_conf
        from airflow_provider_sparktune.tuning.session import check_tuning_key

        arguments.name("spark_conn_id", self.spark_conn_id, allow_none=False)
        arguments.name("mlflow_conn_id", self.mlflow_conn_id, allow_none=False)
        arguments.name("mlflow_experiment", self.mlflow_experiment)
        arguments.positive_number("spark_connect_timeout", self.spark_connect_timeout)
        arguments.positive_number("mlflow_retry_timeout", self.mlflow_retry_timeout, allow_none=False)
        arguments.flag("warm_start", self.warm_start, allow_none=True)
        self._warm_start_k()
        if arguments.name("tuning_key", self.tuning_key) is not None:
            check_tuning_key(self.tuning_key)
        self.spark_conf = arguments.mapping("spark_conf", self.spark_conf)
        check_templated_conf(
            self.spark_conf, self._spark_conf_written(context), self.allowed_templated_spark_conf
        )

    def _spark_conf_written(self, context: Context | None) -> Any:
        """``spark_conf`` as the DAG file wrote it; for a mapped task, as its ``partial()`` wrote it.

        A mapped task's values came from XCom (so from run conf, perhaps): only what ``partial()``
        holds is the DAG author's. Mapping is told by the task instance's map index as well as by
        how Airflow built the operator, so either alone is enough. An operator not built by the
        DAG file (no record of what it wrote) treats all of it as templated.
        """
        mapped = context is not None and _map_index(context) is not None
        if not (mapped or getattr(self, "_spark_conf_from_mapping", False)):
            return getattr(self, "_spark_conf_as_written", None)
        dag = self.get_dag()
        task = dag.task_dict.get(self.task_id) if dag is not None else None
        partial_kwargs = getattr(task, "partial_kwargs", None)
        return partial_kwargs.get("spark_conf") if isinstance(partial_kwargs, Mapping) else None

    def _warm_start_k(self) -> int:
        from airflow_provider_sparktune.tuning.spec import check_count

        k = arguments.coerce("warm_start_k", self.warm_start_k, int)
        check_count("warm_start_k", k)
        return int(k)

    def execute(self, context: Context) -> dict[str, Any]:
        import json
        import time

        started_at = time.time()  # startup_s counts from here: the task's own start-up is in it

        from airflow_provider_sparktune.operators.xcom import to_xcom
        from airflow_provider_sparktune.redaction import redact_values
        from airflow_provider_sparktune.tracking.tracker import log_through_root
        from airflow_provider_sparktune.tuning.prepare import prepare_run
        from airflow_provider_sparktune.tuning.run import RunControl
        from airflow_provider_sparktune.tuning.session import TuningSession

        log_through_root()
        logging.getLogger("hyperopt.tpe").setLevel(logging.WARNING)  # two lines per suggestion otherwise
        self._check_arguments(context)
        prepared = prepare_run(
            self.search_space,
            self.objective,
            data=self._open_data(),
            objective_kwargs=self.objective_kwargs,
            **self._settings(),
        )
        # The Spark connection (type, master, conf) is read and checked before MLflow is touched.
        if self.spark_hook.is_connect:
            from airflow_provider_sparktune.tuning.dispatch.launch import refuse_sparktrials_on_connect

            refuse_sparktrials_on_connect(prepared.spec.dispatcher)
        self._control = RunControl()
        with self.mlflow_hook.credentials():
            session = TuningSession(
                prepared, self._tracking_options(context), control=self._control, logger=self.log
            )
            result = session.run(
                self.spark_hook.get_session, stop_spark=self.spark_hook.stop, started_at=started_at
            )
            staging = redact_values(prepared.staged.plan.to_dict()) if prepared.staged is not None else None
            value = self._compare_with_earlier_runs(
                to_xcom(result, mlflow=session.mlflow_info, staging=staging), session, context
            )
        context["ti"].xcom_push(key="best_params", value=value["best_params"])
        self._result = value  # for lineage: the listener asks after execute, from this process or a fork
        if session.unwritten:
            context["ti"].xcom_push(key="return_value", value=value)
            self.log.error(
                "every trial of this run, as JSON: %s", json.dumps([r.to_dict() for r in result.records])
            )
            raise session.unwritten_error(
                "the best result is in XCom and every trial is in this task log as JSON"
            )
        self._announce(context, value)
        return value

    def _compare_with_earlier_runs(
        self, value: dict[str, Any], session: TuningSession, context: Context
    ) -> dict[str, Any]:
        """``value`` with ``improved`` and ``previous_best_loss`` (also tagged on the parent run).

        The comparison is a convenience for consumers: MLflow failing to answer it leaves both None
        (logged), it never fails a night whose trials are all recorded.
        """
        from airflow_provider_sparktune.operators.xcom import with_comparison
        from airflow_provider_sparktune.tracking import schema
        from airflow_provider_sparktune.tracking.history import previous_best_loss

        key = session.options.key
        improved: bool | None = None
        previous: float | None = None
        tracker = session.tracker
        if tracker is not None and not session.unwritten:
            try:
                previous = previous_best_loss(
                    tracker.client,
                    tracker.experiment_id,
                    tuning_key=key,
                    current_run=tracker.run_id,
                    exclude_tags={schema.AIRFLOW_RUN_ID: str(context.get("run_id", ""))},
                )
                best = value.get("best_loss")
                improved = best is not None and (previous is None or best < previous)
                tracker.set_tags(
                    {
                        schema.IMPROVED: str(improved).lower(),
                        schema.PREVIOUS_BEST_LOSS: "" if previous is None else repr(previous),
                    }
                )
            except Exception as err:  # the trials are recorded; only the comparison is missing
                self.log.warning("could not compare with earlier runs of %r: %s", key, err)
                improved = previous = None
        self.log.info(
            "tuning key %r: best loss %s, earlier best %s, improved: %s",
            key,
            value.get("best_loss"),
            previous,
            improved,
        )
        return with_comparison(value, tuning_key=key, improved=improved, previous_best_loss=previous)

    def _announce(self, context: Context, value: dict[str, Any]) -> None:
        """Attach ``value`` to the events of this task's asset outlets, or drop them on a night that
        did not improve when ``emit_if_not_improved`` is False (Airflow emits what remains on success)."""
        from airflow_provider_sparktune.operators.assets import attach_extra, event_assets

        assets = event_assets(self.outlets)
        if not assets:
            return
        emit = arguments.flag("emit_if_not_improved", self.emit_if_not_improved)
        if value.get("improved") is False and not emit:
            self.outlets = [o for o in self.outlets if o not in assets]
            self.log.info(
                "no asset event for %s: best loss %s did not beat %s (emit_if_not_improved=False)",
                ", ".join(a.uri for a in assets),
                value.get("best_loss"),
                value.get("previous_best_loss"),
            )
            return
        attach_extra(context, assets, value)
        self.log.info("asset event for %s: %s", ", ".join(a.uri for a in assets), value["best_params"])

    def _tracking_options(self, context: Context) -> TrackingOptions:
        """The Airflow identity of this try: a retry resumes the tries of the same task instance."""
        from airflow_provider_sparktune.tracking import schema
        from airflow_provider_sparktune.tuning.session import TrackingOptions

        run_id = str(context.get("run_id", ""))
        try_number = str(getattr(context["ti"], "try_number", ""))
        default_name = f"{self.dag_id}.{self.task_id}"
        attempt = {
            schema.AIRFLOW_DAG_ID: self.dag_id,
            schema.AIRFLOW_TASK_ID: self.task_id,
            schema.AIRFLOW_RUN_ID: run_id,
        }
        map_index = _map_index(context)
        if map_index is not None:  # each mapped instance resumes its own tries, not its siblings' trials
            attempt[schema.AIRFLOW_MAP_INDEX] = str(map_index)
        return TrackingOptions(
            tracking_uri=self.mlflow_hook.get_tracking_uri(),
            experiment=self.mlflow_experiment or default_name,
            run_name=f"{self.task_id}{'' if map_index is None else f'[{map_index}]'} {run_id} try {try_number}",
            tuning_key=self.tuning_key or default_name,
            attempt_tags=attempt,
            tags={schema.AIRFLOW_TRY_NUMBER: try_number},
            warm_start=self._warm_start_enabled(context),
            warm_start_k=self._warm_start_k(),
            warm_start_excludes={schema.AIRFLOW_RUN_ID: run_id},  # no warm start from this DAG run
            retry_timeout=float(self.mlflow_retry_timeout),
            redact=mask_secrets,
        )

    def _warm_start_enabled(self, context: Context) -> bool:
        enabled = arguments.flag("warm_start", self.warm_start, allow_none=True)
        if enabled is not None:
            return enabled
        dag_run = context.get("dag_run")
        run_type = str(getattr(dag_run, "run_type", "") or "")
        return run_type.lower().endswith("scheduled")

    def _open_data(self) -> StagedData | None:
        """``data`` as a checked handle: a URI is planned here, a sensor's plan is used as it is."""
        from airflow_provider_sparktune.data.staging import StagingPlan
        from airflow_provider_sparktune.data.storage import normalize_uri

        if arguments.is_unset(self.data):
            return None
        data = self.data.strip() if isinstance(self.data, str) else self.data
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
            redact_uri(plan.uri),
            threshold,
            plan.threshold_bytes,
        )
        return plan.with_threshold(threshold)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the dataset tuned on (input), the night's MLflow run (output), the summary facet."""
        from airflow_provider_sparktune.operators.lineage import data_uri_of, tuning_lineage

        return tuning_lineage(self._result, data_uri_of(self.data))

    def on_kill(self) -> None:
        """Cancel this task's Spark job group; no new trial starts and the MLflow run ends KILLED."""
        if self._control is not None:
            self._control.cancel("killed")
