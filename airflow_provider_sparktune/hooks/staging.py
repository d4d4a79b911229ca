"""DataStagingHook: a dataset behind a URI, its size, and the broadcast-or-reload plan for the trials."""

from __future__ import annotations

import posixpath
import re
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
from airflow_provider_sparktune.hooks.uri_scope import (
    CACHE_LAYERS,
    LOCAL_PROTOCOLS,
    SERVER_PROTOCOLS,
    chain,
    control_character,
    describe_control,
    dot_segment,
    non_cache_layer,
    protocol,
    refusal,
)
from airflow_provider_sparktune.redaction import SafeUri, redact_uri

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
# Where a connection's login, password and options may go: an allow-list of protocols whose
# destination this hook can check. Any other protocol fsspec knows (dbfs, github, jupyter, webdav,
# oci, hf, reference, ...) gets them only once it is added here with the reason it is safe.
# - SERVER_PROTOCOLS (ftp, sftp/ssh, smb, hdfs, webhdfs, http/https): the URI names the server, so its
#   scheme, host and port must be the connection's (``_check_host``).
# - The bucket protocols below: the URI names a bucket or container, and the server is the
#   endpoint of the options (``client_kwargs.endpoint_url``, ``endpoint_url``, ``account_host``) or
#   the cloud's own; the filesystem takes nothing from the URI that moves it:
#   s3/s3a: s3fs reads only ``?versionId=`` from a URI, and botocore refuses a bucket name outside
#   ``[a-zA-Z0-9._-]``, so a bucket cannot carry a host; gs/gcs: gcsfs reads only the generation;
#   abfs/abfss/az: adlfs reads the storage account from a host ``<account>.dfs|blob.core.windows.net``
#   in the URI, so such a URI must name the connection's own account (``_check_account``).
# - memory: the process's own memory; the options reach no server.
# Local paths (file://, local://) take no options at all: nothing there needs a credential.
_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "abfs", "abfss", "az")
_AZURE_PROTOCOLS = ("abfs", "abfss", "az")
_IN_PROCESS_PROTOCOLS = ("memory",)
_AZURE_ACCOUNT_HOST = re.compile(r"([a-z0-9]+)\.(?:dfs|blob)\.core\.windows\.net")
_AZURE_HOST_SUFFIX = re.compile(r"\.(?:dfs|blob)\.core\.windows\.net", re.IGNORECASE)
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


def check_characters(field_name: str, uri: str) -> None:
    """A URI (or marker) holds no control character, raw or percent-encoded (``%00``, ``%0a``, ...).

    A server or filesystem that decodes one takes it as the end of a protocol command or of a log
    line (``%0d%0a`` in an FTP path sends a second command); no dataset path needs one.
    """
    found = control_character(uri)
    if found is None:
        return
    char, level = found
    raise StagingError(
        f"{field_name}: {SafeUri(uri)!r} holds a control character ({describe_control(char)}"
        f"{', percent-encoded' if level else ''}), which a filesystem or server that decodes it takes as "
        "the end of a protocol command or a log line; write the URI without control characters"
    )


def check_marker(uri: str, marker: str) -> None:
    """A success marker lies in the dataset: a relative name without dot-segments, or a URI inside it.

    Judged as the filesystem fetches it: ``%2e%2e/_SUCCESS`` is ``../_SUCCESS`` to an HTTP server.
    """
    check_characters("success_marker", marker)
    uri = normalize_uri(uri).rstrip("/")
    # the dataset directory, or a file dataset's folder (a file is told by its suffix, as formats are)
    folders = [uri, posixpath.dirname(uri)] if posixpath.splitext(uri)[1] else [uri]
    absolute = "://" in marker or "::" in marker or marker.startswith(("/", "~", "\\"))
    outside = refusal(marker, [f for f in folders if f]) is not None
    if dot_segment(marker) is not None or (absolute and outside):
        raise StagingError(
            f"success_marker: {SafeUri(marker)!r} is outside the dataset {SafeUri(uri)!r}; use a name "
            "relative to the dataset directory (a file's folder) such as '_SUCCESS'"
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


def _allowed_protocols() -> str:
    return (
        f"{', '.join(SERVER_PROTOCOLS)} (the connection's host), {', '.join(_BUCKET_PROTOCOLS)} (the "
        f"connection's endpoint) or {', '.join(_IN_PROCESS_PROTOCOLS)}"
    )


class DataStagingHook(BaseHook):
    """Measures datasets through fsspec and decides how trials get them; reads the connection lazily.

    The connection (type ``fsspec``) is optional: its extra holds fsspec storage options (for s3fs
    ``{"client_kwargs": {"endpoint_url": ...}}``, or ``{"storage_options": {...}}``), and login/password,
    when set, fill the credential keys of s3, abfs/az, (s)ftp, smb and hdfs URIs. Without it fsspec's
    own defaults apply (environment variables, instance roles). Local paths never use credentials.

    A URI from run conf must not send the connection's credentials elsewhere: for protocols whose URI
    names a server ((s)ftp, smb, hdfs, http), the connection gives its options only to the scheme,
    host and port it names; for s3, gs and abfs/az the endpoint stays the connection's; any other
    protocol gets no login, password or options (an allow-list). ``allowed_prefixes`` (the DAG
    author's) and the extra's ``allowed_prefixes`` (the connection owner's) limit which URIs may be
    read at all; each list that is set must cover the URI.
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
        check_characters(field_name, uri)
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

    def _check_host(self, uri: str, connection: DataConnection, field_name: str = "data") -> None:
        """The connection's options go only to the server it names: its scheme, host and port.

        The URI's server is read as its filesystem reads it (yarl for HTTP, fsspec's own parsing for
        the others); a port left out on either side is the protocol's default port.
        """
        kind = _SAME_SCHEME.get(protocol(uri), protocol(uri))
        shown = redact_uri(uri)
        host, port = _server(uri, kind)
        if host is None:
            raise StagingError(
                f"{field_name} {shown!r}: its server cannot be read (host, or a port that is not a number "
                "from 0 to 65535); write it as scheme://host:port/path"
            )
        if connection.host is None:
            raise StagingError(
                f"data_conn_id {self.data_conn_id!r}: the connection names no host, so its login, password "
                f"and options are not sent to {host!r}; set the connection's host to the server they belong to"
            )
        if host != connection.host:
            raise StagingError(
                f"{field_name} {shown!r}: host {host!r} is not the host of data_conn_id "
                f"{self.data_conn_id!r}, whose login, password and options go only to that host; read the "
                "data from the connection's host, or use a connection for this one"
            )
        if connection.scheme is not None and kind != connection.scheme:
            raise StagingError(
                f"{field_name} {shown!r}: scheme {kind!r} is not the scheme of data_conn_id "
                f"{self.data_conn_id!r} ({connection.scheme!r}), whose login, password and options go only to "
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
                f"{field_name} {shown!r}: port {port} is not the port of data_conn_id "
                f"{self.data_conn_id!r} ({named}), whose login, password and options go only to that server; read the data from "
                f"port {expected}, or use a connection whose port is {port}"
            )

    def _check_account(self, uri: str, connection: DataConnection, field_name: str) -> None:
        """An abfs/az URI that names a storage account (``container@<account>.dfs.core.windows.net``)
        names the connection's own: adlfs would send the connection's credentials to that account."""
        netloc = uri.split("://", 1)[-1].split("/", 1)[0]
        host = netloc.rsplit("@", 1)[-1].rsplit(":", 1)[0].lower()
        if "@" not in netloc and not _AZURE_HOST_SUFFIX.search(host):
            return  # abfs://container/path: the connection's account
        found = _AZURE_ACCOUNT_HOST.fullmatch(host)
        own = str(connection.options.get("account_name") or connection.login or "").lower() or None
        if found is not None and own is not None and found.group(1) == own:
            return
        named = (
            f"its account {own!r}"
            if own
            else "its account (it names none: set its login or extra.account_name)"
        )
        raise StagingError(
            f"{field_name} {redact_uri(uri)!r}: it names the storage account host {host!r}, but the login, "
            f"password and options of data_conn_id {self.data_conn_id!r} go only to {named}; write the URI "
            "without the account (abfs://container/path) to read from the connection's account, or use a "
            "connection for that account"
        )

    def _check_destination(self, uri: str, connection: DataConnection, field_name: str) -> None:
        """The connection's login, password and options go only where this hook can check the
        destination (see the allow-list above); anything else is refused before any read."""
        layers, target = chain(uri)
        shown = redact_uri(uri)
        odd = non_cache_layer(layers)  # a chained URL (simplecache::ftp://...) names its server inside
        if odd is not None:
            raise StagingError(
                f"{field_name} {shown!r}: the chained layer {odd + '::'!r} is not a cache "
                f"({', '.join(c + '::' for c in CACHE_LAYERS)}), so the login, password and options of "
                f"data_conn_id {self.data_conn_id!r} are not sent through it; read the data by its own "
                "URL, or use a connection without login, password or options"
            )
        kind = protocol(target)
        if kind in SERVER_PROTOCOLS:
            self._check_host(target, connection, field_name)
        elif kind in _AZURE_PROTOCOLS:
            self._check_account(target, connection, field_name)
        elif kind not in _BUCKET_PROTOCOLS and kind not in _IN_PROCESS_PROTOCOLS:
            raise StagingError(
                f"{field_name} {shown!r}: the protocol {kind!r} is not one whose server data_conn_id "
                f"{self.data_conn_id!r} can be checked against, so its login, password and options are "
                f"not sent; use a protocol of {_allowed_protocols()}, or a connection without login, "
                "password or options"
            )

    def get_storage_options(self, uri: str, field_name: str = "data") -> dict[str, Any]:
        """fsspec storage options for ``uri``: the connection's extra plus its login/password, when
        its destination is the connection's; ``field_name`` names ``uri`` in the errors.

        Local files (a local path, or a cache of one) take none: nothing there needs a credential.
        """
        check_characters(field_name, uri)
        if protocol(chain(uri)[1]) in LOCAL_PROTOCOLS:
            return {}
        kind = protocol(uri)
        connection = self._connection()
        extra, login, password = connection.options, connection.login, connection.password
        if extra or login or password:
            self._check_destination(uri, connection, field_name)
        options = dict(extra)
        if login or password:
            keys = _CREDENTIAL_KEYS.get(kind)
            if keys is None or (password and keys[1] is None):
                raise StagingError(
                    f"data_conn_id {self.data_conn_id!r}: its login/password cannot be used for {kind}:// "
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
            raise StagingError(f"data {redact_uri(uri)!r}: no such file or directory; check the path")
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
            storage_options=self._readiness_options(uri, conditions.get("success_marker")),
            **conditions,
        )

    def _readiness_options(self, uri: str, marker: Any) -> dict[str, Any]:
        """The storage options a sensor's poke reads ``uri`` (the field ``uri``) and an absolute
        ``success_marker`` with: the marker is read with the dataset's options, so its destination is
        checked too."""
        options = self.get_storage_options(uri, "uri")
        marker = str(marker or "")
        if "://" in marker or "::" in marker:
            self.get_storage_options(marker, "success_marker")
        return options

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
