"""The "MLflow run" extra link: opens the parent run of a task try in the MLflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_provider_sparktune.redaction import redact_uri
from airflow_provider_sparktune.tracking.store import is_server_uri

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def mlflow_run_url(mlflow: dict[str, Any] | None) -> str:
    """UI address of a run, or "" when the store is not a server (SQLite has no UI of its own)."""
    mlflow = mlflow or {}
    uri, experiment_id, run_id = (mlflow.get(k, "") for k in ("tracking_uri", "experiment_id", "run_id"))
    if not (is_server_uri(uri) and experiment_id and run_id):
        return ""
    return f"{redact_uri(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key="return_value")
        return mlflow_run_url(value.get("mlflow") if isinstance(value, dict) else None)
