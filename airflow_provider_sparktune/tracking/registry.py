"""Champion/challenger in the MLflow model registry: register a night's model, compare, move the alias.

The new version is compared with the version under the ``champion`` alias on one metric of their
model runs, with the semantics of MLflow's ``MetricThreshold``: a challenger wins when it is better
by at least ``min_absolute_change`` and by at least ``min_relative_change`` x |champion|, and (with
``threshold``) reaches that value. A winner gets the ``champion`` alias, or only ``challenger`` when a
person approves promotions. The first version of a model (no champion yet) wins if it reaches
``threshold``. Every version is tagged with the decision and its reason, the tuning run and the data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_sparktune.exceptions import RegistryError, TuningConfigError
from airflow_provider_sparktune.tracking import schema

log = logging.getLogger(__name__)

PROMOTE, CHALLENGER, KEEP = "promote", "challenger", "keep"


@dataclass(frozen=True)
class GateRule:
    """What a challenger must do to replace the champion."""

    metric: str
    greater_is_better: bool = True
    min_absolute_change: float = 0.0
    min_relative_change: float = 0.0
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise TuningConfigError(f"metric: {self.metric!r} must name a metric of the model runs")
        for name in ("min_absolute_change", "min_relative_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TuningConfigError(f"{name}: {value!r} must be a finite number >= 0")
            if value < 0:
                raise TuningConfigError(
                    f"{name}: {value!r} must be >= 0 (the direction is greater_is_better)"
                )
        if self.threshold is not None and (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, (int, float))
            or not math.isfinite(self.threshold)
        ):
            raise TuningConfigError(f"threshold: {self.threshold!r} must be a finite number or None")

    def describe(self, value: float) -> str:
        return f"{self.metric} {value:.6g} ({'higher' if self.greater_is_better else 'lower'} is better)"


@dataclass(frozen=True)
class Champion:
    version: str
    value: float | None  # None: its run has no such metric


def decide(rule: GateRule, value: float, champion: Champion | None) -> tuple[bool, str]:
    """Whether ``value`` replaces the champion, and why, in one sentence for the log and the tags."""
    sign = 1.0 if rule.greater_is_better else -1.0
    if rule.threshold is not None and sign * (value - rule.threshold) < 0:
        return False, f"{rule.describe(value)} does not reach threshold {rule.threshold:.6g}"
    if champion is None:
        return True, f"first version with {rule.describe(value)}: no champion yet"
    if champion.value is None:
        return False, (
            f"champion v{champion.version}'s run has no metric {rule.metric!r}, so it cannot be compared; "
            "log the metric on its run or move the alias by hand"
        )
    gain = sign * (value - champion.value)
    needed = max(rule.min_absolute_change, rule.min_relative_change * abs(champion.value))
    versus = f"{rule.describe(value)} vs champion v{champion.version} {champion.value:.6g}"
    if gain <= 0:
        return False, f"{versus}: not better"
    if gain < needed:
        return False, f"{versus}: better by {gain:.6g}, less than the required {needed:.6g}"
    return True, f"{versus}: better by {gain:.6g} (required {needed:.6g})"


@dataclass(frozen=True)
class GateResult:
    """Everything the gate decided: the XCom value and the task log line come from it."""

    decision: str
    reason: str
    registered_model: str
    version: str
    model_uri: str  # models:/<name>/<version>
    source_run_id: str
    metric: str
    value: float
    greater_is_better: bool
    champion_version: str | None  # after the gate
    previous_champion_version: str | None
    previous_champion_value: float | None
    aliases: tuple[str, ...]  # set on the new version

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["aliases"] = list(self.aliases)
        return out


def _refused(name: str, uri: str, what: str, err: Exception, run_id: str) -> RegistryError:
    message = getattr(err, "message", None) or str(err)
    return RegistryError(
        f"registered_model_name {name!r}: the model registry at {uri} refused to {what}: {message}. "
        f"Nothing was promoted; the model run {run_id} and the tuning results are kept. Check that the "
        "MLflow connection's user may write registered models, then clear this task to gate again."
    )


@dataclass(frozen=True)
class ModelSource:
    """What a new version is created from: MLflow's ``register_model`` resolution, on our own client."""

    run_id: str
    source: str
    model_id: str | None = None


def _bad_uri(model_uri: str) -> TuningConfigError:
    return TuningConfigError(
        f"model_uri: {model_uri!r} names no logged model; use runs:/<run id>/<artifact path> (what "
        "log_model logged in that run) or models:/m-<logged model id>"
    )


def model_source(client: Any, model_uri: str) -> ModelSource:
    """The run and source of ``runs:/<run id>/<path>`` or an MLflow 3 ``models:/m-<id>``.

    A model MLflow 3 logged as a logged model of the run is registered from ``models:/<model id>``; one
    whose files are in the run's own artifacts, from the ``runs:/`` URI. ``mlflow.register_model``
    does the same through the process-wide tracking URI, which a task must not change.
    """
    if model_uri.startswith("models:/m-"):
        model_id = model_uri[len("models:/") :].split("/", 1)[0]
        found = client.get_logged_model(model_id)
        if not found.source_run_id:
            raise _bad_uri(model_uri)
        return ModelSource(str(found.source_run_id), f"models:/{model_id}", model_id)
    if not model_uri.startswith("runs:/"):
        raise _bad_uri(model_uri)
    run_id, _, path = model_uri[len("runs:/") :].partition("/")
    path = path.strip("/")
    if not run_id or not path:
        raise _bad_uri(model_uri)
    run = client.get_run(run_id)
    logged: list[Any] = []
    token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{path}'", page_token=token
        )
        logged.extend(m for m in page if m.source_run_id == run_id)
        token = page.token
        if not token:
            break
    if logged:  # MLflow 3's log_model: listing the run's artifacts would show the logged model's files too
        newest = max(logged, key=lambda m: m.creation_timestamp or 0)
        return ModelSource(run_id, f"models:/{newest.model_id}", newest.model_id)
    if any(item.path == f"{path}/MLmodel" for item in client.list_artifacts(run_id, path)):
        return ModelSource(run_id, model_uri)  # a model written into the run's own artifacts
    raise TuningConfigError(f"model_uri: run {run_id} logged no model at {path!r}; {_bad_uri(model_uri)}")


def _create_registered_model(client: Any, name: str) -> None:
    """Create ``name`` unless it exists (another task may have created it since it was read)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def gate_model(
    client: Any,
    *,
    tracking_uri: str,
    shown_uri: str,
    model_uri: str,
    name: str,
    rule: GateRule,
    auto_promote: bool = True,
    champion_alias: str = "champion",
    challenger_alias: str = "challenger",
    tags: Mapping[str, str] | None = None,
) -> GateResult:
    """Register ``model_uri`` as a new version of ``name`` and gate it against ``champion_alias``.

    ``client`` reads the runs and writes the registry at ``tracking_uri``; ``shown_uri`` is that URI
    as error messages may show it (no credentials).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    source = model_source(client, model_uri)
    run_id = source.run_id
    metrics = client.get_run(run_id).data.metrics
    if rule.metric not in metrics:
        raise TuningConfigError(
            f"metric: the model run {run_id} has no metric {rule.metric!r} (it has {sorted(metrics)}); "
            "log it on the run that logged the model, or name one of those"
        )
    value = float(metrics[rule.metric])

    champion: Champion | None = None
    exists = True
    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise _refused(name, shown_uri, "read the registered model", err, run_id) from err
        exists, aliases = False, {}  # a model name that does not exist yet: created below
    if champion_alias in aliases:
        version = str(aliases[champion_alias])
        champion_run = client.get_model_version(name, version).run_id
        champion_value = client.get_run(champion_run).data.metrics.get(rule.metric) if champion_run else None
        champion = Champion(version, None if champion_value is None else float(champion_value))

    wins, reason = decide(rule, value, champion)
    decision = KEEP if not wins else PROMOTE if auto_promote else CHALLENGER
    if decision == CHALLENGER:
        reason += f"; waits for approval under alias {challenger_alias!r} (auto_promote=False)"
    try:
        if not exists:
            _create_registered_model(client, name)
        # A SQL registry store looks a logged model up through the process-wide tracking URI: point it
        # at this store for the call (MLflow's own scoped setter, which restores "unset" too).
        with _use_tracking_uri(tracking_uri):
            registered = client.create_model_version(
                name, source.source, run_id=run_id, tags=dict(tags or {}), model_id=source.model_id
            )
    except MlflowException as err:
        raise _refused(name, shown_uri, "register a new version", err, run_id) from err
    version = str(registered.version)
    moved = {PROMOTE: (champion_alias,), CHALLENGER: (challenger_alias,), KEEP: ()}[decision]
    decided = {
        schema.GATE_DECISION: decision,
        schema.GATE_REASON: reason,
        schema.GATE_METRIC: rule.metric,
        schema.GATE_VALUE: repr(value),
        schema.GATE_CHAMPION_VERSION: champion.version if champion else "",
        schema.GATE_CHAMPION_VALUE: ""
        if champion is None or champion.value is None
        else repr(champion.value),
    }
    try:
        for key, text in decided.items():
            client.set_model_version_tag(name, version, key, text)
        for alias in moved:
            client.set_registered_model_alias(name, alias, version)
    except MlflowException as err:
        raise _refused(name, shown_uri, f"tag or alias version {version}", err, run_id) from err
    return GateResult(
        decision=decision,
        reason=reason,
        registered_model=name,
        version=version,
        model_uri=f"models:/{name}/{version}",
        source_run_id=run_id,
        metric=rule.metric,
        value=value,
        greater_is_better=rule.greater_is_better,
        champion_version=version if decision == PROMOTE else (champion.version if champion else None),
        previous_champion_version=champion.version if champion else None,
        previous_champion_value=champion.value if champion else None,
        aliases=moved,
    )
