"""Assets of the nightly loop: what a tuning task and a registry gate announce, and how a consumer reads it.

A tuning task with ``outlets=[tuning_asset(key)]`` emits one asset event per successful night whose
``extra`` is the task's XCom value (the contract in docs/xcom-and-mlflow.md), so a DAG scheduled on the asset reads
the same shape from ``triggering_asset_events`` as a downstream task reads from XCom. URIs use the
provider's own scheme, ``sparktune://``: Airflow accepts a scheme without a registered normalizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from airflow.sdk import Asset

SCHEME = "sparktune"
_CONTAINER_AT_ACCOUNT = ("abfs", "abfss", "wasb", "wasbs")  # Azure: container@account is the host


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


def redact_uri(uri: Any) -> Any:
    """``uri`` without a user or password (``http://u:p@host/x`` -> ``http://host/x``); others as given.

    XCom, asset events and OpenLineage facets are readable by everyone who sees the DAG: a credential
    written into a tracking or data URI must not travel with them.
    """
    if not isinstance(uri, str) or "@" not in uri or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    if parts.scheme.lower() in _CONTAINER_AT_ACCOUNT and ":" not in userinfo:
        return uri  # abfss://container@account...: the address, not a user
    return urlunsplit(parts._replace(netloc=host))


def event_assets(outlets: Iterable[Any]) -> list[Asset]:
    """The concrete assets among a task's outlets (aliases and references are not ours to fill)."""
    from airflow.sdk import Asset

    return [outlet for outlet in outlets if isinstance(outlet, Asset)]


def attach_extra(context: Mapping[str, Any], assets: Iterable[Asset], extra: Mapping[str, Any]) -> None:
    """Put ``extra`` on this task's event for each asset (Airflow emits them when the task succeeds)."""
    events = context["outlet_events"]
    for asset in assets:
        events[asset].extra = dict(extra)


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
