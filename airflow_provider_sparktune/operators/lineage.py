"""OpenLineage for the tuning operator and the staged-data sensor: which dataset produced which run.

Imported only by the ``get_openlineage_facets_on_*`` methods, which the OpenLineage provider calls
(``pip install airflow-provider-sparktune[openlineage]``); without it nothing here is imported.
Datasets are named by the OpenLineage naming spec from the data URI; the tuning run is an output
dataset in the MLflow tracking server's namespace; the summary is the ``sparktune_tuning`` run facet.
No URI leaves here with a user, a password or a credential query value in it (``redaction.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attr
from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.event_v2 import Dataset
from openlineage.client.facet_v2 import RunFacet

from airflow_provider_sparktune.redaction import redact_uri

TUNING_FACET = "sparktune_tuning"
STAGING_FACET = "sparktune_staging"


@attr.define
class SparktuneTuningRunFacet(RunFacet):
    """The tuning night as its XCom value says it (no URIs with credentials)."""

    tuning_key: str | None = attr.field(default=None)
    best_params: dict[str, Any] = attr.field(factory=dict)
    best_loss: float | None = attr.field(default=None)
    trials: dict[str, Any] = attr.field(factory=dict)
    stopped_reason: str | None = attr.field(default=None)
    improved: bool | None = attr.field(default=None)
    previous_best_loss: float | None = attr.field(default=None)
    mlflow_run_id: str | None = attr.field(default=None)
    staging_mode: str | None = attr.field(default=None)


@attr.define
class SparktuneStagingRunFacet(RunFacet):
    """The staging plan a sensor decided: how the data will reach the trials."""

    mode: str | None = attr.field(default=None)
    format: str | None = attr.field(default=None)
    size_bytes: int | None = attr.field(default=None)
    threshold_bytes: int | None = attr.field(default=None)


def dataset_name(uri: str) -> tuple[str, str]:
    """``(namespace, name)`` of a data URI by the OpenLineage naming spec, without credentials.

    A local path or ``file://`` URI: ``file`` and the absolute path; an object store or any other
    ``scheme://authority/path``: ``scheme://authority`` and the path within it (``s3://bucket`` and
    ``features/ds=1``), as the spec names S3, GCS, Azure and HDFS datasets. An fsspec chain
    (``simplecache::ftp://host/x``) is named by its storage URL, the last part with a scheme.
    """
    uri = redact_uri(uri.strip())
    if "::" in uri:  # a chain: the caching or archive layers in front of the storage URL
        storage = [part for part in uri.split("::") if "://" in part]
        uri = storage[-1] if storage else uri
    parts = urlsplit(uri)
    if not parts.scheme or parts.scheme == "file" or len(parts.scheme) == 1:  # "C:" is a drive
        path = parts.path if parts.scheme == "file" else uri
        return "file", path.rstrip("/") or "/"
    path = parts.path.strip("/")
    if parts.scheme in ("hdfs", "webhdfs"):
        path = "/" + path
    return f"{parts.scheme}://{parts.netloc}", path or "/"


def data_uri_of(data: Any) -> str | None:
    """The dataset URI of an operator's rendered ``data``: a URI, or a sensor's plan (dict or JSON)."""
    import json

    if isinstance(data, str) and data.strip().startswith("{"):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            return None
    if isinstance(data, Mapping):
        uri = data.get("uri")
        return str(uri) if uri else None
    return data.strip() if isinstance(data, str) and data.strip() else None


def input_dataset(uri: str | None) -> list[Dataset]:
    if not uri:
        return []
    namespace, name = dataset_name(uri)
    return [Dataset(namespace=namespace, name=name)]


def tuning_lineage(value: Mapping[str, Any] | None, data_uri: str | None) -> OperatorLineage:
    """Input: the dataset tuned on; output: the MLflow run of the night; run facet: its summary."""
    if value is None:  # the task failed before a result: only the input is known
        return OperatorLineage(inputs=input_dataset(data_uri))
    staging = value.get("staging") or {}
    mlflow = value.get("mlflow") or {}
    outputs = []
    if mlflow.get("run_id"):
        outputs.append(
            Dataset(
                namespace=redact_uri(str(mlflow.get("tracking_uri") or "mlflow")),
                name=f"experiments/{mlflow.get('experiment_id', '')}/runs/{mlflow['run_id']}",
            )
        )
    facet = SparktuneTuningRunFacet(
        tuning_key=value.get("tuning_key"),
        best_params=dict(value.get("best_params") or {}),
        best_loss=value.get("best_loss"),
        trials=dict(value.get("trials") or {}),
        stopped_reason=value.get("stopped_reason"),
        improved=value.get("improved"),
        previous_best_loss=value.get("previous_best_loss"),
        mlflow_run_id=mlflow.get("run_id"),
        staging_mode=staging.get("mode"),
    )
    return OperatorLineage(
        inputs=input_dataset(staging.get("uri") or data_uri),
        outputs=outputs,
        run_facets={TUNING_FACET: facet},
    )


def staging_lineage(plan: Mapping[str, Any] | None, uri: str | None) -> OperatorLineage:
    """Input: the dataset the sensor waited for; run facet: the plan it returned."""
    if plan is None:
        return OperatorLineage(inputs=input_dataset(uri))
    facet = SparktuneStagingRunFacet(
        mode=plan.get("mode"),
        format=plan.get("format"),
        size_bytes=plan.get("size_bytes"),
        threshold_bytes=plan.get("threshold_bytes"),
    )
    return OperatorLineage(inputs=input_dataset(plan.get("uri") or uri), run_facets={STAGING_FACET: facet})
