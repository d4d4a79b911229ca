"""MlflowHook: the tracking URI and token behind an Airflow connection of type ``mlflow``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_sparktune.exceptions import TrackingError
from airflow_provider_sparktune.hooks.connections import no_such_connection, warn_fallback
from airflow_provider_sparktune.redaction import redact_uri
from airflow_provider_sparktune.tracking.store import embedded_tracking_uri
from airflow_provider_sparktune.tracking.tracker import TOKEN_ENV


class MlflowHook(BaseHook):
    """Reads the connection lazily. Host is the tracking URI; the password, when set, is the token.

    Without the connection, for the default id only (and with a warning): ``MLFLOW_TRACKING_URI``,
    else an embedded SQLite store under AIRFLOW_HOME. Any other id Airflow cannot find is an error.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self._resolved: tuple[str, str | None] | None = None

    def _resolve(self) -> tuple[str, str | None]:
        if self._resolved is None:
            try:
                conn = self.get_connection(self.mlflow_conn_id)
            except AirflowNotFoundException:
                if self.mlflow_conn_id != self.default_conn_name:  # a typo must not log to a local store
                    raise TrackingError(
                        no_such_connection(
                            "mlflow_conn_id",
                            self.mlflow_conn_id,
                            self.default_conn_name,
                            "track to MLFLOW_TRACKING_URI or, unset, the SQLite store under AIRFLOW_HOME",
                        )
                    ) from None
                given = os.environ.get("MLFLOW_TRACKING_URI")
                uri = given or embedded_tracking_uri()
                where = "MLFLOW_TRACKING_URI" if given else "the embedded SQLite store under AIRFLOW_HOME"
                warn_fallback(
                    self.log,
                    "MLflow",
                    self.mlflow_conn_id,
                    f"tracking to {redact_uri(uri)} ({where})",
                    "To track to a server, with its token as the password (host http://host:5000)",
                )
                self._resolved = (uri, None)
            else:
                if conn.conn_type not in ("mlflow", None, ""):
                    raise TrackingError(
                        f"mlflow_conn_id: connection {self.mlflow_conn_id!r} has type {conn.conn_type!r}; "
                        "use a connection of type 'mlflow' whose host is the tracking URI"
                    )
                try:
                    uri = self._uri_from(conn)
                except TrackingError as err:
                    raise TrackingError(f"mlflow_conn_id {self.mlflow_conn_id!r}: {err}") from None
                self._resolved = (uri, conn.password or None)
        return self._resolved

    @staticmethod
    def _uri_from(conn: Any) -> str:
        host = (conn.host or "").strip()
        if not host:
            raise TrackingError(
                "the connection's host is empty; set it to the tracking URI (http://host:5000)"
            )
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        if conn.port and host.count(":") == 1:
            host = f"{host}:{conn.port}"
        return host.rstrip("/")

    def get_tracking_uri(self) -> str:
        return self._resolve()[0]

    @contextmanager
    def credentials(self) -> Iterator[None]:
        """Expose the token to MLflow's REST client (it reads the environment) for this block only."""
        token = self._resolve()[1]
        if token is None:
            yield
            return
        previous = os.environ.get(TOKEN_ENV)
        os.environ[TOKEN_ENV] = token
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = previous

    def test_connection(self) -> tuple[bool, str]:
        from airflow_provider_sparktune.tracking.tracker import check_reachable

        try:
            with self.credentials():
                check_reachable(self.get_tracking_uri())
        except Exception as err:
            return False, str(err)
        return True, f"MLflow tracking store {self.get_tracking_uri()} is reachable"
