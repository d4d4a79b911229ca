"""DataStagingHook: a dataset behind a URI, its size, and the broadcast-or-reload plan for the trials."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse, urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_sparktune.data.staged import StagedData
from airflow_provider_sparktune.data.staging import (
    BROADCAST_LIMIT_BYTES,
    Readiness,
    StagingPlan,
    check_readiness,
    check_threshold,
    plan_dataset,
)
from airflow_provider_sparktune.data.storage import list_dataset, normalize_uri
from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.hooks.connections import no_such_connection, warn_fallback
from airflow_provider_sparktune.hooks.uri_scope import dot_segment, protocol, refusal
from airflow_provider_sparktune.redaction import redact_uri

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
# Protocols whose URI names the server that receives the storage options: a connection's options go
# only to the host the connection names, never to one a URI from run conf chose.
_HOST_PROTOCOLS = ("sftp", "ssh", "ftp", "smb", "hdfs", "webhdfs", "http", "https")
# The port each of those filesystems connects to when the URI names none (fsspec's defaults; hdfs:
# the namenode's usual RPC port): a connection without a port means this port, not every port.
DEFAULT_PORTS = {
    "ftp": 21,
    "sftp": 22,
    "ssh": 22,
    "smb": 445,
    "http": 80,
    "https": 443,
    "webhdfs": 50070,
    "hdfs": 8020,
}
_SAME_SCHEME = {"ssh": "sftp"}  # fsspec serves both with one filesystem
PREFIXES_EXTRA = "allowed_prefixes"  # the connection extra's list of URI prefixes its data may come from


@dataclass(frozen=True)
class DataConnection:
    """What an ``fsspec`` connection gives: storage options, credentials, its host, allowed prefixes."""

    options: dict[str, Any] = field(default_factory=dict)
    login: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    prefixes: tuple[str, ...] = ()
    scheme: str | None = None  # when the host is written with one (https://files.example.com)


def check_prefixes(field_name: str, value: Any) -> tuple[str, ...]:
    """A list of URI prefixes (``s3://bucket/features/``, ``/data/``), local ones made absolute."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(p, str) and p.strip() for p in value):
        raise StagingError(
            f'{field_name}: {value!r} is not a list of URI prefixes; use e.g. ["s3://bucket/features/"]'
        )
    return tuple(normalize_uri(p) for p in value)


def check_marker(uri: str, marker: str) -> None:
    """A success marker lies in the dataset: a relative name without dot-segments, or a URI inside it.

    Judged as the filesystem fetches it: ``%2e%2e/_SUCCESS`` is ``../_SUCCESS`` to an HTTP server.
    """
    uri = normalize_uri(uri).rstrip("/")
    # the dataset directory, or a file dataset's folder (a file is told by its suffix, as formats are)
    folders = [uri, posixpath.dirname(uri)] if posixpath.splitext(uri)[1] else [uri]
    absolute = "://" in marker or "::" in marker or marker.startswith(("/", "~", "\\"))
    outside = refusal(marker, [f for f in folders if f]) is not None
    if dot_segment(marker) is not None or (absolute and outside):
        raise StagingError(
            f"success_marker: {marker!r} is outside the dataset {uri!r}; use a name relative to the "
            "dataset directory (a file's folder) such as '_SUCCESS'"
        )


def _server(uri: str, kind: str) -> tuple[str | None, int | None]:
    """(host, port) the filesystem for ``uri`` connects to; (None, None) when it cannot tell.

    HTTP goes through yarl, as fsspec's HTTP filesystem does; the others through fsspec's own parsing
    (``infer_storage_options``: the netloc after the last ``@``), which does not lower-case the host.
    """
    if kind in ("http", "https"):
        import yarl

        try:
            url = yarl.URL(uri, encoded=False)
        except (ValueError, TypeError):
            return None, None
        return (url.host or "").lower().strip("[]") or None, url.explicit_port
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None, None
    host = parts.netloc.rsplit("@", 1)[-1]
    host = host.rsplit("]", 1)[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
    return host.lower().strip("[]") or None, port


def _protocol(uri: str) -> str:
    from fsspec.core import split_protocol

    return (split_protocol(uri)[0] or "file").lower()


class DataStagingHook(BaseHook):
    """Measures datasets through fsspec and decides how trials get them; reads the connection lazily.

    The connection (type ``fsspec``) is optional: its extra holds fsspec storage options (for s3fs
    ``{"client_kwargs": {"endpoint_url": ...}}``, or ``{"storage_options": {...}}``), and login/password,
    when set, fill the credential keys of s3, abfs/az, (s)ftp, smb and hdfs URIs. Without it fsspec's
    own defaults apply (environment variables, instance roles). Local paths never use credentials.

    A URI from run conf must not send the connection's credentials elsewhere: for protocols whose URI
    names a server ((s)ftp, smb, hdfs, http), the connection gives its options only to the host it
    names. ``allowed_prefixes`` (the DAG author's) and the extra's ``allowed_prefixes`` (the
    connection owner's) limit which URIs may be read at all; each list that is set must cover the URI.
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
        allowed_prefixes: Sequence[str] | str | None = None,
    ) -> None:
        super().__init__()
        self.data_conn_id = data_conn_id
        self.broadcast_threshold_bytes = broadcast_threshold_bytes
        self.allowed_prefixes = allowed_prefixes
        self._resolved: DataConnection | None = None

    def _connection(self) -> DataConnection:
        if self._resolved is None:
            if not self.data_conn_id:
                self._resolved = DataConnection()
                return self._resolved
            try:
                conn = self.get_connection(self.data_conn_id)
            except AirflowNotFoundException:
                if self.data_conn_id != self.default_conn_name:  # a typo must not drop its credentials
                    raise StagingError(
                        no_such_connection(
                            "data_conn_id",
                            self.data_conn_id,
                            self.default_conn_name,
                            "read with fsspec's defaults (environment variables, instance roles), or set "
                            "it to None for no connection",
                        )
                    ) from None
                warn_fallback(
                    self.log,
                    "Data",
                    self.data_conn_id,
                    "fsspec's defaults apply (environment variables, instance roles), and no "
                    "allowed_prefixes of a connection",
                    "To give storage options, credentials or allowed_prefixes (type fsspec)",
                )
                self._resolved = DataConnection()
            else:
                if conn.conn_type not in ("fsspec", None, ""):
                    raise StagingError(
                        f"data_conn_id: connection {self.data_conn_id!r} has type {conn.conn_type!r}; use a "
                        "connection of type 'fsspec' whose extra holds the fsspec storage options"
                    )
                extra = dict(conn.extra_dejson if conn.extra else {})
                prefixes = check_prefixes(
                    f"data_conn_id {self.data_conn_id!r}: extra.{PREFIXES_EXTRA}",
                    extra.pop(PREFIXES_EXTRA, None),
                )
                options = extra.get("storage_options", extra)
                if not isinstance(options, Mapping):
                    raise StagingError(
                        f"data_conn_id: connection {self.data_conn_id!r} extra.storage_options must be a dict"
                    )
                host = (conn.host or "").strip()
                parsed = urlparse(host if "://" in host else f"//{host}")
                try:
                    port = conn.port or parsed.port or None
                except ValueError:
                    port = None
                scheme = parsed.scheme.lower() or None
                self._resolved = DataConnection(
                    dict(options),
                    conn.login or None,
                    conn.password or None,
                    (parsed.hostname or "").lower() or None,
                    port,
                    prefixes,
                    _SAME_SCHEME.get(scheme or "", scheme),
                )
        return self._resolved

    def check_allowed(self, uri: str, field_name: str = "data") -> str:
        """``uri`` (normalized) when every prefix list that is set covers it; else a StagingError."""
        uri = normalize_uri(uri)
        lists = [
            ("allowed_prefixes", check_prefixes("allowed_prefixes", self.allowed_prefixes)),
            (f"data_conn_id {self.data_conn_id!r}: extra.{PREFIXES_EXTRA}", self._connection().prefixes),
        ]
        for where, prefixes in lists:
            why = refusal(uri, prefixes) if prefixes else None
            if why is not None:
                reads = f" (the filesystem reads {redact_uri(why.reads)!r})" if why.reads else ""
                fix = why.fix or f"read data from there, or add its prefix to {where}"
                raise StagingError(
                    f"{field_name}: {redact_uri(uri)!r} is not under the prefixes {where} allows "
                    f"({', '.join(map(repr, prefixes))}){reads}{why.reason}; {fix}"
                )
        return uri

    def _check_host(self, uri: str, connection: DataConnection) -> None:
        """The connection's options go only to the server it names: its scheme, host and port.

        The URI's server is read as its filesystem reads it (yarl for HTTP, fsspec's own parsing for
        the others); a port left out on either side is the protocol's default port.
        """
        kind = _SAME_SCHEME.get(protocol(uri), protocol(uri))
        shown = redact_uri(uri)
        host, port = _server(uri, kind)
        if host is None:
            raise StagingError(
                f"data {shown!r}: its server cannot be read (host, or a port that is not a number from 0 "
                "to 65535); write it as scheme://host:port/path"
            )
        if connection.host is None:
            raise StagingError(
                f"data_conn_id {self.data_conn_id!r}: the connection names no host, so its login, password "
                f"and options are not sent to {host!r}; set the connection's host to the server they belong to"
            )
        if host != connection.host:
            raise StagingError(
                f"data {shown!r}: host {host!r} is not the host of data_conn_id "
                f"{self.data_conn_id!r}, whose login, password and options go only to that host; read the "
                "data from the connection's host, or use a connection for this one"
            )
        if connection.scheme is not None and kind != connection.scheme:
            raise StagingError(
                f"data {shown!r}: scheme {kind!r} is not the scheme of data_conn_id {self.data_conn_id!r} "
                f"({connection.scheme!r}), whose login, password and options go only to "
                f"{connection.scheme}://{connection.host}; read the data over {connection.scheme}, or use a "
                f"connection for {kind}://{host}"
            )
        expected = connection.port or DEFAULT_PORTS.get(kind)
        port = port or DEFAULT_PORTS.get(kind)
        if port != expected:
            named = (
                f"{expected}"
                if connection.port
                else f"{expected}: the connection names no port, so {kind}'s default port"
            )
            raise StagingError(
                f"data {shown!r}: port {port} is not the port of data_conn_id {self.data_conn_id!r} "
                f"({named}), whose login, password and options go only to that server; read the data from "
                f"port {expected}, or use a connection whose port is {port}"
            )

    def get_storage_options(self, uri: str) -> dict[str, Any]:
        """fsspec storage options for ``uri``: the connection's extra plus its login/password."""
        protocol = _protocol(uri)
        if protocol in _LOCAL_PROTOCOLS:
            return {}
        connection = self._connection()
        extra, login, password = connection.options, connection.login, connection.password
        if extra or login or password:
            for part in uri.split("::"):  # a chained URL (simplecache::ftp://...) names its server inside
                if _protocol(part) in _HOST_PROTOCOLS:
                    self._check_host(part, connection)
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
        uri = self.check_allowed(uri)
        listing = list_dataset(uri, self.get_storage_options(uri))
        if listing is None:
            raise StagingError(f"data {uri!r}: no such file or directory; check the path")
        return listing.size_bytes

    def plan(self, uri: str, format: str | None = None) -> StagingPlan:
        """Broadcast when the data is smaller than the threshold, else reload; JSON via ``to_dict()``."""
        uri = self.check_allowed(uri)
        return plan_dataset(
            uri,
            data_format=format,
            threshold_bytes=self.threshold_bytes,
            storage_options=self.get_storage_options(uri),
        )

    def check_readiness(self, uri: str, *, previous: Any = None, **conditions: Any) -> Readiness:
        """One sensor poke: ``check_readiness`` of the core's staging module, with this connection."""
        uri = self.check_allowed(uri, "uri")
        marker = conditions.get("success_marker")
        if marker:
            check_marker(uri, str(marker))
        return check_readiness(
            uri,
            previous=previous,
            threshold_bytes=self.threshold_bytes,
            storage_options=self.get_storage_options(uri),
            **conditions,
        )

    def open(self, plan: StagingPlan) -> StagedData:
        """The handle trials read ``data.value`` from, after checking the data can be read."""
        self.check_allowed(plan.uri)
        staged = StagedData.open(plan, self.get_storage_options(plan.uri))
        self._report_input(plan.uri)
        return staged

    def _report_input(self, uri: str) -> None:
        """Hook-level lineage (Airflow's hook lineage collector): this task read ``uri``.

        Lineage is a by-product: a URI the collector cannot turn into an asset is logged, never fatal.
        """
        from airflow.sdk.lineage import get_hook_lineage_collector

        from airflow_provider_sparktune.redaction import redact_uri

        shown = str(redact_uri(uri))
        asset_uri = shown if "://" in shown else f"file://{shown}"
        try:
            get_hook_lineage_collector().add_input_asset(context=self, uri=asset_uri)
        except Exception as err:  # the data was read; only its lineage is missing, and a person should know
            self.log.warning(
                "hook lineage: the input %s was not recorded (%s: %s); the task goes on without it",
                asset_uri,
                type(err).__name__,
                redact_uri(str(err)),
            )
