"""StagedDataSensor: wait until the training data is complete, then hand the tuning task its staging plan."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_sparktune.data.staging import (
    BROADCAST_LIMIT_BYTES,
    StagingPlan,
    check_threshold,
    parse_bytes,
)
from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.hooks.staging import DataStagingHook, check_marker
from airflow_provider_sparktune.operators.masking import mask_uri_secrets
from airflow_provider_sparktune.redaction import SafeUri, redact_text, redact_values

if TYPE_CHECKING:
    from airflow.sdk import Context

# Reschedule mode starts a new process per poke: the size seen last time is kept in the task state store.
OBSERVED_KEY = "sparktune.staged_data.observed"
STABILITY_WAIT_S = 5.0


class StagedDataSensor(BaseSensorOperator):
    """Wait until a dataset is ready, and return its staging plan (broadcast or reload) as XCom.

    Ready means: the URI exists and holds data, ``success_marker`` (e.g. ``_SUCCESS``) is present
    when given, the size is at least ``min_size_bytes``, and the size (and number of data files) did
    not change between two pokes, so a job still writing is not mistaken for a finished one.

    :param uri: dataset URI (file or directory) for any fsspec protocol (templated).
    :param data_format: ``parquet``, ``csv``, ``npy`` or ``npz``; default from the URI (templated).
    :param success_marker: file that marks the dataset complete, relative to the dataset directory
        (a file's folder) or a URI of its own (templated).
    :param min_size_bytes: wait until the data files hold at least this many bytes (templated).
    :param broadcast_threshold_bytes: broadcast below this size, reload at or above (default 2 GiB, templated).
    :param require_stable: wait for two pokes that see the same size (default True).
    :param data_conn_id: optional connection of type ``fsspec`` with the storage credentials.
    :param allowed_data_prefixes: URI prefixes ``uri`` must be under (``["s3://bucket/features/"]``);
        the connection's extra ``allowed_prefixes`` applies too. ``None``: any URI (not templated).
    :param deferrable: wait in the triggerer instead of a worker slot.

    ``uri`` may carry credentials (``ftp://user:pw@host/x``): every poke's log line, error, the plan in
    XCom and lineage name it redacted, and its secrets are registered with Airflow's secrets masker.
    """

    template_fields: Sequence[str] = (
        "uri",
        "data_format",
        "success_marker",
        "min_size_bytes",
        "broadcast_threshold_bytes",
    )
    ui_color = "#e8f7e4"

    def __init__(
        self,
        *,
        uri: str,
        data_format: str | None = None,
        success_marker: str | None = None,
        min_size_bytes: int | str = 0,
        broadcast_threshold_bytes: int | str = BROADCAST_LIMIT_BYTES,
        require_stable: bool = True,
        data_conn_id: str | None = DataStagingHook.default_conn_name,
        allowed_data_prefixes: Sequence[str] | None = None,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.uri = uri
        self.data_format = data_format
        self.success_marker = success_marker
        self.min_size_bytes = min_size_bytes
        self.broadcast_threshold_bytes = broadcast_threshold_bytes
        self.require_stable = require_stable
        self.data_conn_id = data_conn_id
        self.allowed_data_prefixes = allowed_data_prefixes
        self.deferrable = deferrable
        self._observed: list[int] | None = None
        self._plan: dict[str, Any] | None = None  # the plan returned, for lineage

    @cached_property
    def hook(self) -> DataStagingHook:
        return DataStagingHook(
            self.data_conn_id,
            broadcast_threshold_bytes=self._threshold(),
            allowed_prefixes=self.allowed_data_prefixes,
        )

    def _threshold(self) -> int:
        return check_threshold(self.broadcast_threshold_bytes)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render, then register the rendered URI's secrets with Airflow's secrets masker before the
        rendered fields are stored (the UI shows them) and before anything is logged."""
        super().render_template_fields(context, jinja_env)
        mask_uri_secrets(self.uri)

    def _conditions(self) -> dict[str, Any]:
        if not self.uri or not str(self.uri).strip():
            raise StagingError("uri: empty; pass the dataset URI (file or directory)")
        mask_uri_secrets(str(self.uri))
        with _without_secrets_of(self.uri):
            # before any poke, and before deferring: the prefixes, and where the credentials may go
            uri = self.hook.check_allowed(str(self.uri), "uri")
            self.hook.get_storage_options(uri, "uri")
            if self.success_marker:
                check_marker(uri, str(self.success_marker))
        return {
            "data_format": self.data_format or None,
            "success_marker": self.success_marker or None,
            "min_size_bytes": parse_bytes(self.min_size_bytes or 0, "min_size_bytes"),
            "require_stable": self.require_stable,
        }

    def _previous(self, context: Context) -> Any:
        store = context.get("task_state_store") if self.reschedule else None
        return store.get(OBSERVED_KEY) if store is not None else self._observed

    def _remember(self, context: Context, observed: list[int] | None) -> None:
        self._observed = observed
        store = context.get("task_state_store") if self.reschedule else None
        if store is None:
            return
        if observed is None:
            store.delete(OBSERVED_KEY)
        else:
            value: Any = list(observed)  # JSON: [size_bytes, data files]
            store.set(OBSERVED_KEY, value)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        conditions = self._conditions()
        with _without_secrets_of(self.uri):
            readiness = self.hook.check_readiness(self.uri, previous=self._previous(context), **conditions)
            if readiness.awaiting_stability and self._cannot_remember(context):
                # Reschedule mode without a task state store: nothing survives to the next poke, so
                # look twice now, a short while apart.
                time.sleep(min(float(self.poke_interval), STABILITY_WAIT_S))
                readiness = self.hook.check_readiness(self.uri, previous=readiness.observed, **conditions)
        if readiness.ready and readiness.plan is not None:
            self._log_plan(readiness.plan)
            self._plan = redact_values(readiness.plan.to_dict())  # also for lineage
            return PokeReturnValue(is_done=True, xcom_value=self._plan)
        self.log.info("not ready: %s", readiness.message)
        self._remember(context, readiness.observed)
        return False

    def _cannot_remember(self, context: Context) -> bool:
        """Reschedule mode starts each poke afresh; without a task state store it keeps nothing."""
        return self.reschedule and context.get("task_state_store") is None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from airflow_provider_sparktune.triggers.staged_data import StagedDataTrigger

        conditions = self._conditions()  # bad arguments fail here, not in the triggerer
        self.defer(
            trigger=StagedDataTrigger(
                uri=str(self.uri),
                broadcast_threshold_bytes=self._threshold(),
                data_conn_id=self.data_conn_id,
                allowed_prefixes=list(self.allowed_data_prefixes or []) or None,
                poke_interval=float(self.poke_interval),
                timeout_at=time.time() + float(self.timeout),
                **conditions,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: the plan, or the timeout (skipped with soft_fail), or the error."""
        event = event or {}
        status = event.get("status")
        if status == "success":
            plan = StagingPlan.from_value(event.get("plan"), "event.plan")
            self._log_plan(plan, pokes=event.get("pokes"))
            self._plan = redact_values(plan.to_dict())  # also for lineage
            return self._plan
        if status == "timeout":
            raise AirflowSensorTimeout(f"Sensor has timed out: {redact_text(str(event.get('message')))}")
        raise StagingError(
            redact_text(str(event.get("message") or f"the trigger sent no usable event: {event!r}"))
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the dataset waited for (input) and the staging plan as a run facet."""
        from airflow_provider_sparktune.operators.lineage import staging_lineage

        return staging_lineage(self._plan, str(self.uri))

    def _log_plan(self, plan: StagingPlan, pokes: Any = None) -> None:
        self.log.info(
            "dataset ready%s: %s (%s, %d bytes) -> %s: %s",
            f" after {pokes} pokes" if pokes else "",
            plan.safe_uri,
            plan.format,
            plan.size_bytes,
            plan.mode,
            plan.reason,
        )


@contextmanager
def _without_secrets_of(uri: Any) -> Iterator[None]:
    """A refusal raised below (a hook, a filesystem) names ``uri`` without its secrets, however it was built."""
    try:
        yield
    except StagingError as err:
        shown = SafeUri(str(uri)).hide_in(str(err))
        if shown == str(err):
            raise
        raise StagingError(shown) from None
