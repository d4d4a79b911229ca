"""MLflow logging of a tuning run: a parent run per task try and one child run per finished trial.

Every call goes through ``MlflowClient`` with an explicit ``run_id`` (no global active run), so the
watcher thread can log trials while the main thread owns the parent run. Logging happens on the
driver only: executors need no route to MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow_provider_sparktune.exceptions import TrackingError
from airflow_provider_sparktune.redaction import redact_text, redact_uri
from airflow_provider_sparktune.tracking import schema
from airflow_provider_sparktune.tracking.store import is_server_uri, open_client, sqlite_path
from airflow_provider_sparktune.values import json_native

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.records import TrialRecord, TuningResult
    from airflow_provider_sparktune.tuning.spec import TuningSpec

log = logging.getLogger(__name__)

# MLflow's limits for one log_batch request (mlflow.utils.validation)
MAX_PARAMS_PER_BATCH = 100  # and as many tags
MAX_METRICS_PER_BATCH = 1000
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_BYTES = 900_000  # under the request's 1 MB, with room for the JSON around keys and values
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
# Zombie-try checks that fail in a row before the log says, at ERROR, that the fence is off: one failure
# is a blip (a restart, a timeout); three, at one check per finished trial and at most one per 30 s
# (tuning/session.py), mean nothing stops this try should a later try of the run start.
FENCE_OFF_AFTER = 3
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"  # where MLflow's REST client reads a tracking server's token
# Every variable MLflow's REST client reads credentials from: kept out of what Spark workers inherit.
CREDENTIAL_ENV = (
    TOKEN_ENV,
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
)
CLIENT_SETTINGS = {
    # MLflow's REST client retries a refused request for minutes by default; the write-behind queue
    # (write_queue.py) does the waiting instead, so each request gives up quickly.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # With a tracking server MLflow prints two "View run" lines per closed run to stdout: 800 lines in
    # the task log of a 400-trial run. The task logs the parent run's address once instead.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


# The loggers MLflow points straight at stderr when it is imported.
MLFLOW_STREAM_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")


def log_through_root() -> None:
    """Send MLflow's log records through the root logger, at their own level.

    MLflow writes them to stderr itself, and the Airflow task supervisor records stderr as errors:
    "Creating initial MLflow database tables..." would show as a red line in every task log.
    """
    from airflow_provider_sparktune.tracking.store import quiet_locked_errors, telemetry_off_unless_asked

    telemetry_off_unless_asked()
    import mlflow  # noqa: F401  (importing it is what installs its stderr handlers)

    for name in MLFLOW_STREAM_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    quiet_locked_errors()


_settings_lock = threading.Lock()
_settings_holders = 0  # blocks inside client_settings, in any thread
_settings_added: list[str] = []  # what the first of them set, removed when the last one leaves


@contextmanager
def client_settings() -> Iterator[None]:
    """MLflow requests that fail within seconds and print nothing, for this block; settings made are kept.

    The environment is the process's: blocks in several threads (a run still ending while the next
    one starts) share one set of settings, taken away only when the last block ends, so one leaving
    never takes them from another that is still inside.
    """
    global _settings_holders
    with _settings_lock:
        if _settings_holders == 0:
            _settings_added[:] = [key for key in CLIENT_SETTINGS if key not in os.environ]
            for key in _settings_added:
                os.environ[key] = CLIENT_SETTINGS[key]
        _settings_holders += 1
    try:
        yield
    finally:
        with _settings_lock:
            _settings_holders -= 1
            if _settings_holders == 0:
                for key in _settings_added:
                    os.environ.pop(key, None)
                _settings_added.clear()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"x": 1}, "layers": [8, 4]}`` -> ``{"model.x": 1, "layers.0": 8, "layers.1": 4}``."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, (list, tuple)) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix or "value": value}


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(json_native(value))
    return text if len(text) <= limit else text[: limit - 15] + "...[truncated]"


def batches(
    params: Sequence[Any], metrics: Sequence[Any], tags: Sequence[Any]
) -> Iterator[tuple[list[Any], ...]]:
    """(params, metrics, tags) for as few log_batch requests as MLflow's limits allow.

    One request for a trial run in the common case: against a tracking server each request is a
    round trip and a database transaction, the cost that bounds the write-behind queue's drain.
    """
    left = {"params": list(params), "metrics": list(metrics), "tags": list(tags)}
    per_kind = {
        "params": MAX_PARAMS_PER_BATCH,
        "metrics": MAX_METRICS_PER_BATCH,
        "tags": MAX_PARAMS_PER_BATCH,
    }
    while any(left.values()):
        batch: dict[str, list[Any]] = {kind: [] for kind in left}
        entities = size = 0
        for kind, items in left.items():
            while items and len(batch[kind]) < per_kind[kind] and entities < MAX_ENTITIES_PER_BATCH:
                cost = _entity_bytes(items[0])
                if entities and size + cost > MAX_BATCH_BYTES:
                    break
                batch[kind].append(items.pop(0))
                entities, size = entities + 1, size + cost
        yield batch["params"], batch["metrics"], batch["tags"]


def _entity_bytes(entity: Any) -> int:
    return len(str(entity.key).encode()) + len(str(entity.value).encode()) + 64


def local_artifact_root(tracking_uri: str) -> str | None:
    """For a SQLite store, keep artifacts beside the database instead of in the process's cwd."""
    db_path = sqlite_path(tracking_uri)
    return None if db_path is None else (db_path.parent / "mlartifacts").as_uri()


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial, when a tracking server does not answer."""
    if not is_server_uri(tracking_uri):
        return
    import requests

    url = tracking_uri.rstrip("/") + "/health"
    token = os.environ.get(TOKEN_ENV)  # set by MlflowHook.credentials()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(url, timeout=timeout_s, headers=headers)
    except requests.RequestException as err:
        raise TrackingError(
            f"mlflow_conn_id: MLflow tracking server {redact_uri(tracking_uri)} is unreachable "
            f"({type(err).__name__}); "
            "start it or fix the host of the mlflow connection"
        ) from None
    if response.status_code >= 400:
        raise TrackingError(
            f"mlflow_conn_id: MLflow tracking server {redact_uri(tracking_uri)} answered {response.status_code} "
            "on /health"
        )


class TuningTracker:
    """Owns the parent run of one task try and writes its child runs."""

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.client = open_client(tracking_uri)
        self.experiment_id = ""
        self.run_id = ""
        self.superseded_by: str | None = None  # the later try that closed this try's parent run
        self.fence_failures = 0  # zombie-try checks failed in a row (poll_superseded)
        self._fence_failing_since = 0.0
        self.trial_runs: dict[int, str] = {}  # trial id -> its trial run, as this try wrote them

    @property
    def info(self) -> dict[str, str]:
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id, "run_id": self.run_id}

    def start(self, *, run_name: str, tags: Mapping[str, Any], search_space: Any = None) -> str:
        """Create (or reuse) the experiment and open the parent run."""
        try:
            self.experiment_id = self._experiment_id()
            run = self.client.create_run(
                self.experiment_id,
                run_name=run_name,
                tags={k: _text(v, MAX_TAG_VALUE) for k, v in tags.items()},
            )
            self.run_id = run.info.run_id
            if search_space is not None:
                self.client.log_dict(self.run_id, json_native(search_space), "search_space.json")
        except Exception as err:
            raise TrackingError(
                f"MLflow store {redact_uri(self.tracking_uri)} refused to start the run: {redact_text(str(err))}"
            ) from err
        return self.run_id

    def _experiment_id(self) -> str:
        """The experiment's id, created if missing; a task that created it at the same moment wins."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(
                self.client.create_experiment(
                    self.experiment_name, artifact_location=local_artifact_root(self.tracking_uri)
                )
            )
        except Exception:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def log_spec(self, spec: TuningSpec, extra: Mapping[str, Any] | None = None) -> None:
        """Parent params, written once the ``"auto"`` budgets are resolved: every setting, then ``extra``."""
        self._log_batch(self.run_id, params={**spec.as_params(), **(extra or {})})

    def log_staging(self, plan: Mapping[str, Any]) -> None:
        """The staging plan as an artifact and its reason as a tag (params hold mode, uri and size)."""
        self._log_batch(self.run_id, tags={schema.STAGING_REASON: plan.get("reason", "")})
        self.client.log_dict(self.run_id, json_native(plan), "staging_plan.json")

    def log_trial(self, record: TrialRecord) -> str:
        """One child run per finished trial, created when it finishes, timed as the trial ran."""
        return self.trial_write(record)()

    def trial_write(self, record: TrialRecord) -> Callable[[], str]:
        """The writes of one trial run as a call that can be retried: a step that succeeded is not redone.

        The run is created RUNNING with everything needed to rebuild the trial (``sparktune.vals``,
        ``sparktune.status``) and only marked FINISHED/FAILED/KILLED once params and metrics are in,
        so a reader can tell a complete trial run from one whose writing was cut off.
        """
        tags = {
            schema.PARENT_RUN: self.run_id,
            schema.TID: str(record.tid),
            schema.STATUS: record.status,
            schema.VALS: _text(record.vals, MAX_TAG_VALUE),
            schema.ORIGIN: record.origin,
        }
        if record.source_run_id:
            tags[schema.SOURCE_RUN] = record.source_run_id
        if record.error:
            tags[schema.ERROR] = _text(record.error, MAX_TAG_VALUE)
        if record.pruned_step is not None:
            tags[schema.PRUNED_STEP] = str(record.pruned_step)
        done: dict[str, Any] = {}

        def write() -> str:
            if "run_id" not in done:
                start_ms = int((record.started_at or time.time()) * 1000)
                run = self.client.create_run(
                    self.experiment_id, start_time=start_ms, tags=tags, run_name=f"trial-{record.tid:04d}"
                )
                done["run_id"] = self.trial_runs[record.tid] = run.info.run_id
            if "logged" not in done:
                metrics = dict(record.metrics)
                curve = list(record.curve)
                if record.loss is not None and (not curve or curve[-1][1] != record.loss):
                    curve.append((curve[-1][0] + 1 if curve else 0, record.loss))  # the final loss comes last
                self._log_batch(done["run_id"], params=flatten(record.params), metrics=metrics, curve=curve)
                done["logged"] = True
            end_ms = int((record.finished_at or time.time()) * 1000)
            self.client.set_terminated(
                done["run_id"], status=schema.RUN_STATUS[record.status], end_time=end_ms
            )
            return str(done["run_id"])

        return write

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        self._log_batch(run_id or self.run_id, tags=tags)

    def finish(self, result: TuningResult) -> None:
        """Metrics and artifacts of the whole run, then close the parent run."""
        self.summary_write(result)()
        self.close_finished()

    def summary_write(self, result: TuningResult) -> Callable[[], None]:
        """The run's metrics and artifacts as a call that can be retried: a step that succeeded is not redone.

        The trial list goes in parts (``trials/part-NNNNN.jsonl``, see ``trials_artifact``), each its
        own step: a part written is not uploaded again when a later one fails.

        It needs no trial run written first, so it goes beside the last trial writes; only
        :meth:`close_finished` waits for them.
        """
        from airflow_provider_sparktune.tracking.trials_artifact import (
            PART_RECORDS,
            part_count,
            part_name,
            part_text,
        )

        records = result.records

        def write_part(index: int) -> None:  # each part is made when it is written: no 100 MB string
            part = records[index * PART_RECORDS : (index + 1) * PART_RECORDS]
            self.client.log_text(self.run_id, part_text(part), part_name(index))

        steps: list[Callable[[], Any]] = [
            lambda: self._log_summary(result),
            lambda: self.client.log_dict(self.run_id, json_native(result.best_params), "best_params.json"),
            *[partial(write_part, index) for index in range(part_count(len(records), PART_RECORDS))],
            lambda: self._log_loss_plot(result),
        ]
        if result.spec.directions:
            steps += [lambda: self._log_front(result), lambda: self._log_front_plot(result)]

        def write() -> None:
            if self.check_superseded():
                return
            while steps:
                steps[0]()
                steps.pop(0)

        return write

    def front_marks(self, result: TuningResult) -> Callable[[], None]:
        """Tag each trial run on the Pareto front with this parent run's id, so that the front is one
        filter in the MLflow UI. Queued after every trial write: a resumed member is marked on the
        trial run of the earlier try it came from."""

        def write() -> None:
            for record in result.pareto_front:
                run_id = self.trial_runs.get(record.tid) or record.source_run_id
                if run_id:
                    self._log_batch(run_id, tags={schema.PARETO_FRONT_OF: self.run_id})

        return write

    def close_finished(self) -> None:
        """Mark the parent run FINISHED: readers take that as "every trial run and the summary are in"."""
        if not self.check_superseded():
            self.client.set_terminated(self.run_id, status="FINISHED")

    def check_superseded(self) -> bool:
        """True once a later try of this run closed this try's parent run (it found it still RUNNING).

        This try is then a zombie: it writes no summary and sets no status over the later try's
        decision; its finished trial runs stay for a later try to resume.
        """
        if self.superseded_by is None and self.run_id:
            self.superseded_by = self.client.get_run(self.run_id).data.tags.get(schema.SUPERSEDED_BY)
        return self.superseded_by is not None

    def poll_superseded(self, redact: Callable[[str], str] | None = None, logger: Any = None) -> bool:
        """The zombie-try check made while trials run: a store error is logged, not raised.

        The trials go on without MLflow (their writes wait in the queue), but while the store does not
        answer nothing stops this try once a later try has taken over. So the first failure is a
        warning with its error, ``FENCE_OFF_AFTER`` failures in a row are an error that says the fence
        is off and what to do, and the first answer after that says the check works again. The error
        passes ``redact`` (the caller's masker), then the URI redactor: MLflow quotes the store's URI.
        """
        logger = logger or log
        try:
            superseded = self.check_superseded()
        except Exception as err:
            self.fence_failures += 1
            error = f"{type(err).__name__}: {_first_line(str(err))}"
            error = redact_uri(redact(error) if redact is not None else error)
            store = redact_uri(self.tracking_uri)
            if self.fence_failures == 1:
                self._fence_failing_since = time.monotonic()
                logger.warning(
                    "zombie-try check: MLflow store %s did not say whether a later try of this run has "
                    "taken over (%s); the trials go on and the check is made again",
                    store,
                    error,
                )
            elif self.fence_failures == FENCE_OFF_AFTER:
                logger.error(
                    "zombie-try check off: MLflow store %s failed the last %d checks, over %.0f s (%s). "
                    "Should a later try of this run start meanwhile (a retry, a cleared task), nothing "
                    "stops this try, and both run trials and write to MLflow: bring the store back, or "
                    "stop this try by hand if a later one runs",
                    store,
                    self.fence_failures,
                    time.monotonic() - self._fence_failing_since,
                    error,
                )
            return False
        if self.fence_failures:
            logger.warning(
                "zombie-try check: MLflow store %s answers again, after %d failed checks",
                redact_uri(self.tracking_uri),
                self.fence_failures,
            )
            self.fence_failures = 0
        return superseded

    def supersede(self, parent_run_id: str) -> bool:
        """Close an earlier try's parent run that is still RUNNING; False when it is not (any more).

        The tag goes first, so a try that is still alive sees the fence before the status changes;
        a run that finished meanwhile is left as it ended.
        """
        if self.client.get_run(parent_run_id).info.status != "RUNNING":
            return False
        self.set_tags({schema.SUPERSEDED_BY: self.run_id}, run_id=parent_run_id)
        self.client.set_terminated(parent_run_id, status="FAILED")
        return True

    def _log_loss_plot(self, result: TuningResult) -> None:
        figure = loss_plot(result.records)
        if figure is not None:
            self.client.log_figure(self.run_id, figure, "loss_per_trial.png")

    def _log_front(self, result: TuningResult) -> None:
        """The Pareto front: its trial ids as a parent tag, its params and losses as ``pareto_front.json``."""
        front = [{"tid": r.tid, "params": r.params, "losses": r.losses} for r in result.pareto_front]
        tids = ",".join(str(r.tid) for r in result.pareto_front)
        self._log_batch(self.run_id, tags={schema.PARETO_FRONT: tids})
        self.client.log_dict(self.run_id, json_native(front), "pareto_front.json")

    def _log_front_plot(self, result: TuningResult) -> None:
        from airflow_provider_sparktune.tracking.front_plot import front_plot

        figure = front_plot(result.records, result.pareto_front, result.spec.directions)
        if figure is not None:
            self.client.log_figure(self.run_id, figure, "pareto_front.png")

    def _log_summary(self, result: TuningResult) -> None:
        metrics = {
            "best_loss": result.best_loss,
            "trials_total": result.trials_total,
            "trials_ok": result.trials_ok,
            "trials_failed": result.trials_failed,
            "trials_cancelled": result.trials_cancelled,
            "trials_pruned": result.trials_pruned,
            "trials_lost": result.trials_lost,
            "duration_s": result.duration_s,
            "efficiency": result.efficiency,
            "trial_overhead_s": result.trial_overhead_s,
        }
        if result.startup_s is not None:
            metrics["startup_s"] = result.startup_s
        self._log_batch(self.run_id, metrics=metrics, tags={schema.STOPPED_REASON: result.stopped_reason})

    def end(self, status: str, error: str | None = None) -> None:
        """Close the parent run as FAILED or KILLED; never raises, the original error matters more."""
        if not self.run_id:
            return
        try:
            if self.check_superseded():
                return
            if error:
                self.client.set_tag(self.run_id, schema.ERROR, _text(error, MAX_TAG_VALUE))
            self.client.set_terminated(self.run_id, status=status)
        except Exception:
            log.exception("could not mark MLflow run %s as %s", self.run_id, status)

    def _log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        curve: Sequence[tuple[int, float]] = (),
    ) -> None:
        """``curve``: the ``loss`` metric as (step, value) points, the learning curve MLflow charts."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        param_list = [Param(k, _text(v, MAX_PARAM_VALUE)) for k, v in (params or {}).items()]
        metric_list = [Metric("loss", float(value), now, int(step)) for step, value in curve]
        metric_list += [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        tag_list = [RunTag(k, _text(v, MAX_TAG_VALUE)) for k, v in (tags or {}).items()]
        for params_part, metrics_part, tags_part in batches(param_list, metric_list, tag_list):
            self.client.log_batch(run_id, params=params_part, metrics=metrics_part, tags=tags_part)


def loss_plot(records: Sequence[TrialRecord]) -> Any:
    """Loss per trial and the running best, drawn without pyplot so no GUI backend is needed.

    None without matplotlib (the ``plot`` extra): the run's other artifacts do not need it.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.info(
            "matplotlib is not installed: no loss_per_trial.png (pip install 'airflow-provider-sparktune[plot]')"
        )
        return None

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    ok = [r for r in records if r.status == "ok" and r.loss is not None]
    tids = [r.tid for r in ok]
    losses = [float(r.loss) for r in ok]  # type: ignore[arg-type]
    best: list[float] = []
    for loss in losses:
        best.append(min(loss, best[-1]) if best else loss)
    axes.scatter(tids, losses, s=14, label="trial loss")
    axes.step(tids, best, where="post", color="tab:red", label="best so far")
    failed = [r.tid for r in records if r.status != "ok"]
    if failed and losses:
        axes.scatter(failed, [max(losses)] * len(failed), marker="x", color="grey", label="failed/cancelled")
    axes.set_xlabel("trial id")
    axes.set_ylabel("loss")
    axes.set_title("loss per trial")
    axes.legend(loc="best")
    figure.tight_layout()
    return figure


def _first_line(text: str) -> str:
    """An error's first line, cut: a store's error may be a page of HTML or a traceback."""
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""
