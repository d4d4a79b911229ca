"""DataStagingHook: a dataset behind a URI, its size, and the broadcast-or-reload plan for the trials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_sparktune.data.staging import (
    BROADCAST_LIMIT_BYTES,
    Readiness,
    StagedData,
    StagingPlan,
    check_readiness,
    check_threshold,
    plan_dataset,
)
from airflow_provider_sparktune.data.storage import list_dataset, normalize_uri
from airflow_provider_sparktune.exceptions import StagingError

_LOCAL_PROTOCOLS = ("file", "local")
# Where a connection's login and password go in each filesystem's storage options.
_CREDENTIAL_KEYS: dict[str, tuple[str, str | None]] = {
    "s3": ("key", "secret"),
    "s3a": ("key", "secret"),
    "abfs": ("account_name", "account_key"),
    "abfss": ("account_name", "account_key"),
    "az": ("account_name", "account_key"),
    "sftp": ("username", "password"),
    "ssh": ("username", "password"),
    "ftp": ("username", "password"),
    "smb": ("username", "password"),
    "hdfs": ("user", None),
    "webhdfs": ("user", None),
}


def _protocol(uri: str) -> str:
    from fsspec.core import split_protocol

    return (split_protocol(uri)[0] or "file").lower()


class DataStagingHook(BaseHook):
    """Measures datasets through fsspec and decides how trials get them; reads the connection lazily.

    The connection (type ``fsspec``) is optional: its extra holds fsspec storage options (for s3fs
    ``{"client_kwargs": {"endpoint_url": ...}}``, or ``{"storage_options": {...}}``), and login/password,
    when set, fill the credential keys of s3, abfs/az, (s)ftp, smb and hdfs URIs. Without it fsspec's
    own defaults apply (environment variables, instance roles). Local paths never use credentials.
    """

    conn_name_attr = "data_conn_id"
    default_conn_name = "fsspec_default"
    conn_type = "fsspec"
    hook_name = "Dataset storage (fsspec)"

    def __init__(
        self,
        data_conn_id: str | None = default_conn_name,
        *,
        broadcast_threshold_bytes: int | str = BROADCAST_LIMIT_BYTES,
    ) -> None:
        super().__init__()
        self.data_conn_id = data_conn_id
        self.broadcast_threshold_bytes = broadcast_threshold_bytes
        self._resolved: tuple[dict[str, Any], str | None, str | None] | None = None

    def _connection(self) -> tuple[dict[str, Any], str | None, str | None]:
        if self._resolved is None:
            if not self.data_conn_id:
                self._resolved = ({}, None, None)
                return self._resolved
            try:
                conn = self.get_connection(self.data_conn_id)
            except AirflowNotFoundException:
                self.log.info(
                    "Data connection %r not found: fsspec defaults apply (environment, instance roles)",
                    self.data_conn_id,
                )
                self._resolved = ({}, None, None)
            else:
                if conn.conn_type not in ("fsspec", None, ""):
                    raise StagingError(
                        f"data_conn_id: connection {self.data_conn_id!r} has type {conn.conn_type!r}; use a "
                        "connection of type 'fsspec' whose extra holds the fsspec storage options"
                    )
                extra = conn.extra_dejson if conn.extra else {}
                options = extra.get("storage_options", extra)
                if not isinstance(options, Mapping):
                    raise StagingError(
                        f"data_conn_id: connection {self.data_conn_id!r} extra.storage_options must be a dict"
                    )
                self._resolved = (dict(options), conn.login or None, conn.password or None)
        return self._resolved

    def get_storage_options(self, uri: str) -> dict[str, Any]:
        """fsspec storage options for ``uri``: the connection's extra plus its login/password."""
        protocol = _protocol(uri)
        if protocol in _LOCAL_PROTOCOLS:
            return {}
        extra, login, password = self._connection()
        options = dict(extra)
        if login or password:
            keys = _CREDENTIAL_KEYS.get(protocol)
            if keys is None or (password and keys[1] is None):
                raise StagingError(
                    f"data_conn_id {self.data_conn_id!r}: its login/password cannot be used for {protocol}:// "
                    "URIs; put that filesystem's credentials in the connection extra as fsspec storage options"
                )
            if login:
                options.setdefault(keys[0], login)
            if password and keys[1] is not None:
                options.setdefault(keys[1], password)
        return options

    @property
    def threshold_bytes(self) -> int:
        return check_threshold(self.broadcast_threshold_bytes)

    def size(self, uri: str) -> int:
        """Bytes of the dataset's data files (a directory counts all of them); nothing is read."""
        uri = normalize_uri(uri)
        listing = list_dataset(uri, self.get_storage_options(uri))
        if listing is None:
            raise StagingError(f"data {uri!r}: no such file or directory; check the path")
        return listing.size_bytes

    def plan(self, uri: str, format: str | None = None) -> StagingPlan:
        """Broadcast when the data is smaller than the threshold, else reload; JSON via ``to_dict()``."""
        uri = normalize_uri(uri)
        return plan_dataset(
            uri,
            data_format=format,
            threshold_bytes=self.threshold_bytes,
            storage_options=self.get_storage_options(uri),
        )

    def check_readiness(self, uri: str, *, previous: Any = None, **conditions: Any) -> Readiness:
        """One sensor poke: see :func:`airflow_provider_sparktune.data.staging.check_readiness`."""
        uri = normalize_uri(uri)
        return check_readiness(
            uri,
            previous=previous,
            threshold_bytes=self.threshold_bytes,
            storage_options=self.get_storage_options(uri),
            **conditions,
        )

    def open(self, plan: StagingPlan) -> StagedData:
        """The handle trials read ``data.value`` from, after checking the data can be read."""
        staged = StagedData.open(plan, self.get_storage_options(plan.uri))
        self._report_input(plan.uri)
        return staged

    def _report_input(self, uri: str) -> None:
        """Hook-level lineage (Airflow's hook lineage collector): this task read ``uri``.

        Lineage is a by-product: a URI the collector cannot turn into an asset is logged, never fatal.
        """
        from airflow.sdk.lineage import get_hook_lineage_collector

        from airflow_provider_sparktune.operators.assets import redact_uri

        shown = str(redact_uri(uri))
        asset_uri = shown if "://" in shown else f"file://{shown}"
        try:
            get_hook_lineage_collector().add_input_asset(context=self, uri=asset_uri)
        except Exception as err:
            self.log.debug("hook lineage: %s not recorded: %s", asset_uri, err)
