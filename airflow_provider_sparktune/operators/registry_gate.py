"""ModelRegistryGateOperator: a night's model becomes a registry version, and the champion only if it wins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_sparktune.hooks.mlflow import MlflowHook
from airflow_provider_sparktune.operators import arguments

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_sparktune.tracking.registry import GateResult, GateRule


class ModelRegistryGateOperator(BaseOperator):
    """Register ``model_uri`` as a new version of ``registered_model_name`` and gate it (champion/challenger).

    The new version is compared with the version under the ``champion`` alias on ``metric`` (read from
    both model runs): it wins when it is better by at least ``min_absolute_change`` and by at least
    ``min_relative_change`` x ``abs(champion)`` (MLflow's ``MetricThreshold`` semantics) and reaches
    ``threshold`` when one is set. The first version of a model wins. A winner gets the ``champion``
    alias, or only ``challenger`` with ``auto_promote=False`` (a person moves ``champion`` after review).
    The decision and its reason go to XCom, the task log and tags on the new version; the version is
    also tagged with the tuning run and the dataset. Asset ``outlets`` get an event only when the
    champion moved (``extra``: the XCom value), so serving DAGs schedule on promotions.

    :param model_uri: the night's model (templated): ``runs:/<run id>/<path>`` or ``models:/m-<id>``.
    :param registered_model_name: the registered model (templated); created on the first night.
    :param metric: the metric of the model runs to compare (templated).
    :param greater_is_better: direction of ``metric`` (templated).
    :param min_absolute_change: minimum gain over the champion (templated, >= 0).
    :param min_relative_change: minimum gain as a share of ``abs(champion)`` (templated, >= 0).
    :param threshold: a value the challenger must reach, first night included (templated).
    :param auto_promote: move ``champion`` (True) or set ``challenger`` only (False; templated).
    :param champion_alias: the registry alias of the serving version, which a winner takes.
    :param challenger_alias: the alias a winner gets instead with ``auto_promote=False``.
    :param tuning: the tuning task's XCom value (``tune.output``), for the tuning run and data tags.
    :param mlflow_conn_id: Airflow connection of type ``mlflow`` (the registry is its tracking server).
    """

    template_fields: Sequence[str] = (
        "model_uri",
        "registered_model_name",
        "metric",
        "greater_is_better",
        "min_absolute_change",
        "min_relative_change",
        "threshold",
        "auto_promote",
        "tuning",
    )
    template_fields_renderers = {"tuning": "json"}
    ui_color = "#fdf3e8"

    def __init__(
        self,
        *,
        model_uri: str,
        registered_model_name: str,
        metric: str,
        greater_is_better: bool | str = True,
        min_absolute_change: float | str = 0.0,
        min_relative_change: float | str = 0.0,
        threshold: float | str | None = None,
        auto_promote: bool | str = True,
        champion_alias: str = "champion",
        challenger_alias: str = "challenger",
        tuning: Mapping[str, Any] | str | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_uri = model_uri
        self.registered_model_name = registered_model_name
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.min_absolute_change = min_absolute_change
        self.min_relative_change = min_relative_change
        self.threshold = threshold
        self.auto_promote = auto_promote
        self.champion_alias = champion_alias
        self.challenger_alias = challenger_alias
        self.tuning = tuning
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def mlflow_hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id)

    def _rule(self) -> GateRule:
        from airflow_provider_sparktune.tracking.registry import GateRule

        return GateRule(
            metric=str(self.metric).strip(),
            greater_is_better=bool(arguments.flag("greater_is_better", self.greater_is_better)),
            min_absolute_change=arguments.coerce("min_absolute_change", self.min_absolute_change, float)
            or 0.0,
            min_relative_change=arguments.coerce("min_relative_change", self.min_relative_change, float)
            or 0.0,
            threshold=arguments.coerce("threshold", self.threshold, float),
        )

    def _tags(self, context: Context) -> dict[str, str]:
        """The tuning run, the dataset and this task instance, for the new version."""
        from airflow_provider_sparktune.redaction import redact_uri
        from airflow_provider_sparktune.tracking import schema

        tuning = arguments.mapping("tuning", self.tuning) or {}
        tags = {
            schema.AIRFLOW_DAG_ID: self.dag_id,
            schema.AIRFLOW_TASK_ID: self.task_id,
            schema.AIRFLOW_RUN_ID: str(context.get("run_id", "")),
        }
        run_id = (tuning.get("mlflow") or {}).get("run_id")
        if run_id:
            tags[schema.TUNING_RUN_ID] = str(run_id)
        data_uri = (tuning.get("staging") or {}).get("uri")
        if data_uri:
            tags[schema.DATA_URI] = redact_uri(str(data_uri))
        if tuning.get("tuning_key"):
            tags[schema.TUNING_KEY] = str(tuning["tuning_key"])
        return tags

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_sparktune.redaction import redact_uri
        from airflow_provider_sparktune.tracking.registry import gate_model
        from airflow_provider_sparktune.tracking.store import open_client, telemetry_off_unless_asked
        from airflow_provider_sparktune.values import json_native

        rule = self._rule()
        arguments.name("registered_model_name", self.registered_model_name, allow_none=False)
        arguments.name("model_uri", self.model_uri, allow_none=False)
        auto_promote = bool(arguments.flag("auto_promote", self.auto_promote))
        tags = self._tags(context)
        uri = self.mlflow_hook.get_tracking_uri()
        telemetry_off_unless_asked()
        with self.mlflow_hook.credentials():
            result = gate_model(
                open_client(uri),
                tracking_uri=uri,
                shown_uri=str(redact_uri(uri)),
                model_uri=str(self.model_uri).strip(),
                name=str(self.registered_model_name).strip(),
                rule=rule,
                auto_promote=auto_promote,
                champion_alias=self.champion_alias,
                challenger_alias=self.challenger_alias,
                tags=tags,
            )
        value: dict[str, Any] = json_native({**result.to_dict(), "tracking_uri": redact_uri(uri), **tags})
        self.log.info(
            "%s: version %s of %r: %s",
            result.decision.upper(),
            result.version,
            result.registered_model,
            result.reason,
        )
        self._announce(context, result, value)
        return value

    def _announce(self, context: Context, result: GateResult, value: dict[str, Any]) -> None:
        """Events for the asset outlets only when the champion moved: serving schedules on promotions."""
        from airflow_provider_sparktune.operators.assets import attach_extra, event_assets
        from airflow_provider_sparktune.tracking.registry import PROMOTE

        assets = event_assets(self.outlets)
        if not assets:
            return
        if result.decision != PROMOTE:
            self.outlets = [o for o in self.outlets if o not in assets]
            self.log.info("no asset event for %s: %s", ", ".join(a.uri for a in assets), result.decision)
            return
        attach_extra(context, assets, value)
        self.log.info("asset event for %s: %s", ", ".join(a.uri for a in assets), value["model_uri"])
