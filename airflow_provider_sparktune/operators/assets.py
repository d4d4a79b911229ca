"""Assets of the nightly loop: what a tuning task and a registry gate announce, and how a consumer reads it.

A tuning task with ``outlets=[tuning_asset(key)]`` emits one asset event per successful night whose
``extra`` is the task's XCom value (the contract in docs/xcom-and-mlflow.md), so a DAG scheduled on the asset reads
the same shape from ``triggering_asset_events`` as a downstream task reads from XCom. URIs use the
provider's own scheme, ``sparktune://``: Airflow accepts a scheme without a registered normalizer.
An event's ``extra`` is readable by everyone who sees the DAG: it goes through ``redaction.py`` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from airflow.sdk import Asset

SCHEME = "sparktune"


def tuning_asset(tuning_key: str) -> Asset:
    """``sparktune://tuning/<tuning key>``: new best parameters of one tuning key."""
    from airflow.sdk import Asset

    return Asset(name=f"sparktune.tuning.{tuning_key}", uri=f"{SCHEME}://tuning/{quote(tuning_key, safe='')}")


def model_asset(model_name: str, alias: str = "champion") -> Asset:
    """``sparktune://model/<registered model>/<alias>``: a registry gate moved ``alias`` to a new version."""
    from airflow.sdk import Asset

    return Asset(
        name=f"sparktune.model.{model_name}@{alias}",
        uri=f"{SCHEME}://model/{quote(model_name, safe='')}/{quote(alias, safe='')}",
    )


def event_assets(outlets: Iterable[Any]) -> list[Asset]:
    """The concrete assets among a task's outlets (aliases and references are not ours to fill)."""
    from airflow.sdk import Asset

    return [outlet for outlet in outlets if isinstance(outlet, Asset)]


def attach_extra(context: Mapping[str, Any], assets: Iterable[Asset], extra: Mapping[str, Any]) -> None:
    """Put ``extra`` on this task's event for each asset (Airflow emits them when the task succeeds).

    Every string in it (parameter values aside) passes through the redactor, whatever the caller did.
    """
    from airflow_provider_sparktune.operators.xcom import redacted

    events = context["outlet_events"]
    for asset in assets:
        events[asset].extra = redacted(extra)


def latest_event(context: Mapping[str, Any], asset: Asset) -> dict[str, Any]:
    """The newest event of ``asset`` for a consumer task: its ``extra`` plus where it came from.

    A run the asset scheduled reads the events that triggered it (several nights may have been
    folded into one run: the newest wins); a run started by hand reads the newest event the asset has
    (the task must list ``asset`` in its ``inlets``). Raises ``LookupError`` when there is none.
    """
    triggering = context.get("triggering_asset_events") or {}
    events = list(triggering[asset]) if asset in triggering else []
    triggered = bool(events)
    if not triggered:
        inlet = context["inlet_events"][asset]
        events = [inlet[-1]] if len(inlet) else []
    if not events:
        raise LookupError(f"asset {asset.uri}: no event yet; run the task that emits it first")
    newest = max(events, key=lambda event: event.timestamp)
    return {
        **dict(newest.extra or {}),
        "event": {
            "source_dag_id": newest.source_dag_id,
            "source_run_id": newest.source_run_id,
            "timestamp": newest.timestamp.isoformat(),
            "triggered": triggered,
        },
    }
