"""StagedDataTrigger: the deferrable StagedDataSensor's wait, polled in the triggerer, off the worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_sparktune.data.staging import BROADCAST_LIMIT_BYTES
from airflow_provider_sparktune.redaction import SafeUri, redact_values


class StagedDataTrigger(BaseTrigger):
    """Polls the dataset until it is ready, then fires once with the staging plan.

    Storage calls are blocking (fsspec), so each poke runs in a thread and the event loop stays free.
    The size seen at the previous poke lives in the trigger, so the stability check needs no store.
    The event is ``{"status": "success", "plan": {...}}``, ``{"status": "timeout", ...}`` once
    ``timeout_at`` (epoch seconds) passes, or ``{"status": "error", "message": ...}``. The URI may
    carry credentials: its log lines, events and ``repr`` (the triggerer logs it) name it redacted.
    """

    def __init__(
        self,
        *,
        uri: str,
        data_format: str | None = None,
        success_marker: str | None = None,
        min_size_bytes: int = 0,
        broadcast_threshold_bytes: int = BROADCAST_LIMIT_BYTES,
        require_stable: bool = True,
        data_conn_id: str | None = None,
        allowed_prefixes: list[str] | None = None,
        poke_interval: float = 60.0,
        timeout_at: float | None = None,
    ) -> None:
        super().__init__()
        self.uri = uri
        self.data_format = data_format
        self.success_marker = success_marker
        self.min_size_bytes = min_size_bytes
        self.broadcast_threshold_bytes = broadcast_threshold_bytes
        self.require_stable = require_stable
        self.data_conn_id = data_conn_id
        self.allowed_prefixes = allowed_prefixes
        self.poke_interval = poke_interval
        self.timeout_at = timeout_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "uri": self.uri,
                "data_format": self.data_format,
                "success_marker": self.success_marker,
                "min_size_bytes": self.min_size_bytes,
                "broadcast_threshold_bytes": self.broadcast_threshold_bytes,
                "require_stable": self.require_stable,
                "data_conn_id": self.data_conn_id,
                "allowed_prefixes": self.allowed_prefixes,
                "poke_interval": self.poke_interval,
                "timeout_at": self.timeout_at,
            },
        )

    def __repr__(self) -> str:
        classpath, kwargs = self.serialize()
        shown = {**kwargs, "uri": SafeUri(self.uri)}
        return f"<{classpath} {', '.join(f'{k}={v}' for k, v in shown.items())}>"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_sparktune.hooks.staging import DataStagingHook

        hook = DataStagingHook(
            self.data_conn_id,
            broadcast_threshold_bytes=self.broadcast_threshold_bytes,
            allowed_prefixes=self.allowed_prefixes,
        )
        uri = SafeUri(self.uri)
        previous: list[int] | None = None
        pokes = 0
        while True:
            pokes += 1
            try:
                readiness = await asyncio.to_thread(
                    hook.check_readiness,
                    self.uri,
                    previous=previous,
                    data_format=self.data_format,
                    success_marker=self.success_marker,
                    min_size_bytes=self.min_size_bytes,
                    require_stable=self.require_stable,
                )
            except Exception as err:
                message = f"{type(err).__name__}: {uri.hide_in(str(err))}"
                yield TriggerEvent({"status": "error", "message": message})
                return
            if readiness.ready and readiness.plan is not None:
                self.log.info("poke %d: %s", pokes, readiness.message)
                plan = redact_values(readiness.plan.to_dict())  # the event is stored: no credentials in it
                yield TriggerEvent({"status": "success", "plan": plan, "pokes": pokes})
                return
            self.log.info("poke %d: not ready: %s", pokes, readiness.message)
            previous = readiness.observed
            remaining = None if self.timeout_at is None else self.timeout_at - time.time()
            if remaining is not None and remaining <= 0:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "message": f"{uri} was not ready after {pokes} pokes: {readiness.message}",
                        "pokes": pokes,
                    }
                )
                return
            await asyncio.sleep(
                self.poke_interval if remaining is None else min(self.poke_interval, remaining)
            )
