from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sparktune.data.staging import BROADCAST_LIMIT_BYTES
from airflow_provider_sparktune.data.storage import open_fs
from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.hooks.staging import DataStagingHook
from airflow_provider_sparktune.redaction import redact_uri

pytestmark = pytest.mark.unit


def parquet(path: Path, rows: int = 64) -> Path:
    pd.DataFrame({"x": np.arange(rows, dtype=float), "label": np.arange(rows) % 2}).to_parquet(path)
    return path


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **conn: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "fsspec", **conn}))


def test_hook_declares_its_connection() -> None:
    assert DataStagingHook.conn_name_attr == "data_conn_id"
    assert DataStagingHook.default_conn_name == "fsspec_default"
    assert DataStagingHook.conn_type == "fsspec"
    assert DataStagingHook.hook_name
    assert DataStagingHook().data_conn_id == "fsspec_default"  # nothing is read in __init__


def test_plan_size_and_threshold_on_the_hook(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    parts = [parquet(root / f"part-{i}.parquet") for i in range(3)]
    (root / "_SUCCESS").touch()
    size = sum(p.stat().st_size for p in parts)
    hook = DataStagingHook()  # fsspec_default is not set: fsspec's defaults
    assert hook.size(str(root)) == size
    plan = hook.plan(str(root))
    assert (plan.mode, plan.threshold_bytes, plan.format) == ("broadcast", BROADCAST_LIMIT_BYTES, "parquet")
    small = DataStagingHook(None, broadcast_threshold_bytes=f"{size - 1}B").plan(str(root))
    assert (small.mode, small.threshold_bytes) == ("reload", size - 1)
    data = hook.open(plan)
    assert data.columns == ("x", "label") and data.rows == 192


def test_connection_extra_and_login_become_s3_storage_options(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(
        monkeypatch,
        "lake",
        login="AKIAEXAMPLE",
        password="wJalrEXAMPLE",
        extra={"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}},
    )
    hook = DataStagingHook("lake")
    assert hook.get_storage_options("s3://bucket/features/") == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
        "key": "AKIAEXAMPLE",
        "secret": "wJalrEXAMPLE",
    }
    assert hook.get_storage_options("abfs://container/features/")["account_key"] == "wJalrEXAMPLE"
    assert hook.get_storage_options("/local/features.parquet") == {}  # local paths never get credentials


def test_storage_options_reach_the_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "mem", extra={"storage_options": {"skip_instance_cache": True, "tag": "nightly"}})
    fs, path = open_fs("memory://hooktest/d.parquet")
    with fs.open(path, "wb") as f:
        parquet_bytes = pd.DataFrame({"x": [1.0, 2.0]}).to_parquet()
        f.write(parquet_bytes)
    hook = DataStagingHook("mem")
    options = hook.get_storage_options("memory://hooktest/d.parquet")
    assert options == {"skip_instance_cache": True, "tag": "nightly"}
    assert open_fs("memory://hooktest/d.parquet", options)[0].storage_options["tag"] == "nightly"
    assert hook.plan("memory://hooktest/d.parquet").size_bytes == len(parquet_bytes)


def test_login_that_cannot_be_mapped_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "gcs", login="someone", password="secret")
    with pytest.raises(
        StagingError, match=r"data_conn_id 'gcs': its login/password cannot be used for gs://"
    ):
        DataStagingHook("gcs").get_storage_options("gs://bucket/f.parquet")


def test_wrong_connection_type_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WRONG", json.dumps({"conn_type": "http", "host": "x"}))
    with pytest.raises(
        StagingError, match=r"data_conn_id: connection 'wrong' has type 'http'; use .* 'fsspec'"
    ):
        DataStagingHook("wrong").get_storage_options("s3://bucket/key.parquet")


def test_bad_threshold_names_the_field(tmp_path: Path) -> None:
    path = parquet(tmp_path / "f.parquet")
    with pytest.raises(StagingError, match="broadcast_threshold_bytes: 'lots' is not a number of bytes"):
        DataStagingHook(None, broadcast_threshold_bytes="lots").plan(str(path))
    with pytest.raises(StagingError, match="broadcast_threshold_bytes: must be a positive number"):
        DataStagingHook(None, broadcast_threshold_bytes=0).plan(str(path))


# -- a URI from run conf must not take the connection's credentials elsewhere, nor read anything --


def test_login_and_options_go_only_to_the_connections_host(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "files", host="files.example.com", port=21, login="ann", password="pw-7f3a")
    hook = DataStagingHook("files")
    assert hook.get_storage_options("ftp://files.example.com/ds/x.csv") == {
        "username": "ann",
        "password": "pw-7f3a",
    }
    assert hook.get_storage_options("ftp://FILES.example.com:21/x.csv")["username"] == "ann"
    for uri in ("ftp://evil.example.org/x.csv", "sftp://files.example.com.evil.org/x"):
        with pytest.raises(
            StagingError, match=r"^data 's?ftp://.*': host '.*' is not the host of data_conn_id"
        ) as caught:
            hook.get_storage_options(uri)
        assert "pw-7f3a" not in str(caught.value)
    with pytest.raises(StagingError, match=r"^data 'http://evil.org/x': host 'evil.org'"):
        hook.get_storage_options("http://user:pw@evil.org/x")  # the URI's own password is not repeated
    with pytest.raises(StagingError, match=r"^data 'ftp://evil.example.org/x': host 'evil.example.org'"):
        hook.get_storage_options("simplecache::ftp://evil.example.org/x")


def test_a_connection_without_a_host_sends_its_credentials_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "nohost", login="ann", password="pw", extra={"timeout": 60})
    with pytest.raises(
        StagingError, match=r"^data_conn_id 'nohost': the connection names no host, so its login"
    ):
        DataStagingHook("nohost").get_storage_options("ftp://anywhere.example.org/x.csv")
    set_conn(monkeypatch, "lake", login="AKIA", password="secret")  # s3: the endpoint is the connection's
    assert DataStagingHook("lake").get_storage_options("s3://any-bucket/x")["key"] == "AKIA"


def test_allowed_prefixes_of_the_dag_author_and_of_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "allowed-not"
    allowed.mkdir()
    other.mkdir()
    good, bad = parquet(allowed / "f.parquet"), parquet(other / "f.parquet")
    hook = DataStagingHook(None, allowed_prefixes=[str(allowed)])
    assert hook.plan(str(good)).uri == str(good)
    for uri in (str(bad), str(allowed / ".." / "allowed-not" / "f.parquet"), "/etc/passwd"):
        with pytest.raises(
            StagingError, match=r"^data: '.*' is not under the prefixes allowed_prefixes allows"
        ):
            hook.plan(uri)
    with pytest.raises(StagingError, match=r"^data: 'memory://x/\.\./y' is not under"):
        DataStagingHook(None, allowed_prefixes=["memory://x/"]).check_allowed("memory://x/../y")
    set_conn(monkeypatch, "owned", extra={"allowed_prefixes": [str(other)], "skip_instance_cache": True})
    owned = DataStagingHook("owned")
    assert owned.get_storage_options("memory://a/b") == {"skip_instance_cache": True}  # not a storage option
    assert owned.size(str(bad)) > 0
    with pytest.raises(
        StagingError, match=r"^data: '.*' is not under the prefixes data_conn_id 'owned': extra"
    ):
        owned.plan(str(good))
    with pytest.raises(StagingError, match=r"^allowed_prefixes: 3 is not a list of URI prefixes"):
        DataStagingHook(None, allowed_prefixes=3).plan(str(good))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("marker", "inside"),
    [
        ("_SUCCESS", True),
        ("done/_SUCCESS", True),
        ("{root}/_SUCCESS", True),
        ("{root}/../_SUCCESS", False),
        ("{parent}/_SUCCESS", False),
        ("../_SUCCESS", False),
        ("done/../../x", False),
        ("/etc/passwd", False),
        ("~/x", False),
        ("s3://elsewhere/_SUCCESS", False),
        ("%2e%2e/_SUCCESS", False),  # '..' once decoded: an HTTP server resolves it
        ("%2E%2E/%2e%2e/x", False),
        (".%2e/_SUCCESS", False),
        ("done%2f..%2f..%2fx", False),
        ("{root}/%2e%2e/_SUCCESS", False),
        ("{root}%2f..%2f_SUCCESS", False),
    ],
)
def test_a_success_marker_lies_in_the_dataset(tmp_path: Path, marker: str, inside: bool) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    parquet(root / "part-0.parquet")
    marker = marker.format(root=root, parent=tmp_path)
    hook = DataStagingHook(None)
    if inside:
        hook.check_readiness(str(root), success_marker=marker, require_stable=False)
        return
    with pytest.raises(StagingError, match=r"^success_marker: '.*' is outside the dataset"):
        hook.check_readiness(str(root), success_marker=marker, require_stable=False)


def test_open_reports_its_input_to_airflow_s_hook_lineage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import lineage, plugins_manager

    root = tmp_path / "ds"
    root.mkdir()
    parquet(root / "part-0.parquet")
    # a hook lineage reader is registered, as the OpenLineage provider does when lineage is enabled
    monkeypatch.setattr(
        plugins_manager, "get_hook_lineage_readers_plugins", lambda: [lineage.HookLineageReader]
    )
    lineage.get_hook_lineage_collector.cache_clear()
    try:
        hook = DataStagingHook(None)
        hook.open(hook.plan(str(root)))
        collected = lineage.get_hook_lineage_collector().collected_assets
    finally:
        lineage.get_hook_lineage_collector.cache_clear()
    assert [info.asset.uri for info in collected.inputs] == [f"file://{root}"]
    assert collected.inputs[0].context is hook and collected.outputs == []


# -- prefixes on the URL the filesystem fetches; credentials to the connection's scheme, host, port --


@pytest.mark.unit
def test_encoded_slashes_and_backslashes_do_not_leave_the_prefix() -> None:
    hook = DataStagingHook(None, allowed_prefixes=["https://files.example.com/public/"])
    assert hook.check_allowed("simplecache::https://files.example.com/public/x.csv")
    for uri in (
        "https://files.example.com/public/..%2fprivate/x.csv",
        "https://files.example.com/public%2f..%2fprivate/x.csv",
        "https://files.example.com/public/%252e%252e/private/x.csv",
        "https://files.example.com/public/..%5cprivate/x.csv",
        "https://files.example.com/public/..;/private/x.csv",
        "simplecache::https://files.example.com/public/%2e%2e/private/x.csv",
    ):
        with pytest.raises(StagingError, match=r"^data: '.*' is not under .*: its path has a '\.\.' segment"):
            hook.check_allowed(uri)
    with pytest.raises(StagingError, match=r"a chained URL may only wrap the data in simplecache::"):
        hook.check_allowed("zip://x.csv::https://files.example.com/public/a.zip")


@pytest.mark.unit
def test_credentials_go_to_the_connections_scheme_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "web", host="https://files.example.com", extra={"headers": {"X-Token": "t-1"}})
    web = DataStagingHook("web")
    assert web.get_storage_options("https://files.example.com/x.csv") == {"headers": {"X-Token": "t-1"}}
    assert web.get_storage_options("https://files.example.com:443/x.csv")["headers"]
    with pytest.raises(StagingError) as caught:
        web.get_storage_options("http://files.example.com/x.csv")
    assert str(caught.value) == (
        "data 'http://files.example.com/x.csv': scheme 'http' is not the scheme of data_conn_id 'web' "
        "('https'), whose login, password and options go only to https://files.example.com; read the data "
        "over https, or use a connection for http://files.example.com"
    )
    with pytest.raises(StagingError, match=r"^data '.*': port 8443 is not the port of data_conn_id 'web' "):
        web.get_storage_options("https://files.example.com:8443/x.csv")
    set_conn(monkeypatch, "files", host="files.example.com", port=2121, login="ann", password="pw")
    files = DataStagingHook("files")
    assert files.get_storage_options("ftp://files.example.com:2121/x")["username"] == "ann"
    with pytest.raises(StagingError, match=r"port 21 is not the port of data_conn_id 'files' \(2121\)"):
        files.get_storage_options("ftp://files.example.com/x")  # the URI's default port: 21
    set_conn(monkeypatch, "ssh", host="sftp://files.example.com", login="ann", password="pw")
    assert DataStagingHook("ssh").get_storage_options("ssh://files.example.com/x")["username"] == "ann"
    with pytest.raises(StagingError, match=r"^data '.*': its server cannot be read"):
        DataStagingHook("ssh").get_storage_options("sftp://files.example.com:port/x")


# -- a data connection the DAG names and Airflow cannot find ------------------------------------------


@pytest.mark.unit
def test_a_missing_data_conn_id_is_an_error_naming_it(tmp_path: Path) -> None:
    path = parquet(tmp_path / "f.parquet")
    with pytest.raises(StagingError) as caught:
        DataStagingHook("fsspec_defualt").plan(str(path))
    assert str(caught.value) == (
        "data_conn_id 'fsspec_defualt': no such Airflow connection; create it (Admin > Connections, or "
        "AIRFLOW_CONN_FSSPEC_DEFUALT) or leave data_conn_id at its default 'fsspec_default' to read with "
        "fsspec's defaults (environment variables, instance roles), or set it to None for no connection"
    )


@pytest.mark.unit
def test_the_absent_default_data_connection_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = parquet(tmp_path / "f.parquet")
    assert DataStagingHook().plan(str(path)).size_bytes > 0
    printed = capsys.readouterr()  # the hook's log is Airflow's structured logger
    line = next(x for x in (printed.out + printed.err).splitlines() if "'fsspec_default' is not set" in x)
    assert "warning" in line.lower() and "AIRFLOW_CONN_FSSPEC_DEFAULT" in line, line
    assert DataStagingHook(None).plan(str(path)).size_bytes > 0  # None: no connection, nothing to say
    printed = capsys.readouterr()
    assert "is not set" not in printed.out + printed.err


@pytest.mark.unit
def test_a_failed_lineage_report_is_a_warning_with_the_redacted_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.sdk import lineage

    class Failing:
        def add_input_asset(self, **kwargs: Any) -> None:
            raise ValueError(f"cannot make an asset of {kwargs['uri']}")

    monkeypatch.setattr(lineage, "get_hook_lineage_collector", lambda: Failing())
    hook = DataStagingHook(None)
    hook._report_input("ftp://ann:pw-0d7e@files.example.com/ds/x.parquet")
    printed = capsys.readouterr()
    text = printed.out + printed.err
    line = next(x for x in text.splitlines() if "hook lineage" in x)
    assert "warning" in line.lower(), line
    assert "ftp://files.example.com/ds/x.parquet was not recorded (ValueError: cannot make" in line, line
    assert "pw-0d7e" not in text


# -- the connection's login, password and options go only to destinations the hook can check --------

ALLOWED = (
    "ftp, sftp, ssh, smb, hdfs, webhdfs, http, https (the connection's host), s3, s3a, gs, gcs, abfs, "
    "abfss, az (the connection's endpoint) or memory"
)


@pytest.mark.parametrize(
    "uri",
    [
        "dbfs://x",
        "github://org:repo@main/data/x.csv",
        "jupyter://files.example.com/x.csv",
        "webdav://files.example.com/x.csv",
        "oci://bucket@namespace/x.csv",
        "hf://datasets/org/x.csv",
        "arrow_hdfs://files.example.com/x",
        "reference://x.json",
        "dropbox://x.csv",
    ],
)
def test_a_protocol_whose_server_cannot_be_checked_gets_no_credentials(
    monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    set_conn(monkeypatch, "fsspec_default", host="files.example.com", login="ann", password="pw-91ab")
    kind = uri.split("://", 1)[0]
    with pytest.raises(StagingError) as caught:
        DataStagingHook().get_storage_options(uri)
    assert str(caught.value) == (
        f"data {redact_uri(uri)!r}: the protocol {kind!r} is not "
        "one whose server data_conn_id 'fsspec_default' can be checked against, so its login, password "
        f"and options are not sent; use a protocol of {ALLOWED}, or a connection without login, password "
        "or options"
    )
    set_conn(monkeypatch, "opts", host="files.example.com", extra={"headers": {"Authorization": "t-1"}})
    with pytest.raises(StagingError, match=rf"^data '.*': the protocol {kind!r} is not one whose server"):
        DataStagingHook("opts").get_storage_options(uri)  # options alone are credentials too
    set_conn(monkeypatch, "bare", host="files.example.com", extra={"allowed_prefixes": ["dbfs://x"]})
    assert DataStagingHook("bare").get_storage_options(uri) == {}  # nothing to send: fsspec's defaults


def test_a_chained_layer_that_is_not_a_cache_gets_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "files", host="files.example.com", port=21, login="ann", password="pw")
    hook = DataStagingHook("files")
    for uri, layer in (
        ("zip://x.csv::ftp://files.example.com/a.zip", "zip"),
        ("tar::ftp://files.example.com/a.tar", "tar"),
        ("simplecache::reference::ftp://files.example.com/r.json", "reference"),
    ):
        with pytest.raises(StagingError) as caught:
            hook.get_storage_options(uri)
        assert str(caught.value) == (
            f"data {uri!r}: the chained layer '{layer}::' is not a cache (simplecache::, filecache::, "
            "blockcache::), so the login, password and options of data_conn_id 'files' are not sent "
            "through it; read the data by its own URL, or use a connection without login, password or options"
        )
    set_conn(monkeypatch, "opts", host="files.example.com", extra={"timeout": 30})
    opts = DataStagingHook("opts")  # a cache layer: the server inside is checked
    assert opts.get_storage_options("simplecache::ftp://files.example.com/x.csv") == {"timeout": 30}
    with pytest.raises(StagingError, match=r"^data 'ftp://evil.example.org/x': host 'evil.example.org'"):
        opts.get_storage_options("filecache::ftp://evil.example.org/x")


def test_local_files_take_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "lake", login="AKIA", password="secret", extra={"anon": False})
    hook = DataStagingHook("lake")
    for uri in (
        "/data/x.parquet",
        "file:///data/x.parquet",
        "local:///data/x",
        "simplecache::file:///data/x",
    ):
        assert hook.get_storage_options(uri) == {}, uri


def test_an_azure_uri_names_the_connections_own_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """adlfs reads the storage account from a host <account>.dfs.core.windows.net in the URI."""
    set_conn(monkeypatch, "azure", login="acct", password="key-5e1f")
    hook = DataStagingHook("azure")
    for uri in (
        "abfs://data/features/x.parquet",
        "az://data/features/x.parquet",
        "abfs://data@acct.dfs.core.windows.net/x.parquet",
        "abfs://data@ACCT.blob.core.windows.net/x.parquet",
    ):
        assert hook.get_storage_options(uri)["account_key"] == "key-5e1f", uri
    for uri, host in (
        ("abfs://data@evil.dfs.core.windows.net/x.parquet", "evil.dfs.core.windows.net"),
        ("az://evil.blob.core.windows.net/data/x.parquet", "evil.blob.core.windows.net"),
        ("abfs://data@acct.dfs.core.windows.net.evil.org/x", "acct.dfs.core.windows.net.evil.org"),
        ("abfs://data@files.example.com/x", "files.example.com"),
    ):
        with pytest.raises(StagingError) as caught:
            hook.get_storage_options(uri)
        assert str(caught.value) == (
            f"data {uri!r}: it names the storage account host {host!r}, but the login, password and options "
            "of data_conn_id 'azure' go only to its account 'acct'; write the URI without the account "
            "(abfs://container/path) to read from the connection's account, or use a connection for that "
            "account"
        )
    set_conn(monkeypatch, "sas", extra={"sas_token": "sv=2024&sig=abc"})  # no account named
    with pytest.raises(StagingError, match=r"go only to its account \(it names none: set its login or extra"):
        DataStagingHook("sas").get_storage_options("abfs://data@evil.dfs.core.windows.net/x")


# a model of the allow-list, to hold the hook to with generated URIs
_SERVERS = {"ftp": 21, "sftp": 22, "ssh": 22, "smb": 445, "hdfs": 8020, "webhdfs": 50070, "http": 80}
_SERVERS["https"] = 443
_BUCKETS = ("s3", "s3a", "gs", "gcs")


def _may_get_credentials(uri: str) -> bool:
    """Whether the connection (files.example.com, no port, no scheme) may send its login to ``uri``."""
    from urllib.parse import urlsplit

    *layers, target = uri.split("::")
    if any(layer.split("://")[0] not in ("simplecache", "filecache", "blockcache") for layer in layers):
        return False
    kind = target.split("://", 1)[0].lower()
    if kind in _BUCKETS or kind == "memory":
        return True
    if kind in ("abfs", "abfss", "az"):  # the connection's account is its login, 'ann'
        netloc = target.split("://", 1)[1].split("/", 1)[0]
        host = netloc.rsplit("@", 1)[-1].rsplit(":", 1)[0].lower()
        names_one = "@" in netloc or ".core.windows.net" in host
        return not names_one or host in ("ann.dfs.core.windows.net", "ann.blob.core.windows.net")
    if kind not in _SERVERS:
        return False
    parts = urlsplit(target)
    try:
        port = parts.port or _SERVERS[kind]
    except ValueError:
        return False
    return (parts.hostname or "").lower() == "files.example.com" and port == _SERVERS[kind]


@st.composite
def credential_uris(draw: st.DrawFn) -> str:
    from fsspec.registry import known_implementations

    kinds = sorted(known_implementations) + list(_SERVERS) + ["FTP", "Https", "wat", "s3 ", "x-y"]
    kind = draw(st.sampled_from(kinds))
    userinfo = draw(st.sampled_from(["", "ann@", "ann:pw@", "a@b@", "files.example.com@"]))
    host = draw(
        st.sampled_from(
            [
                "files.example.com",
                "FILES.example.com",
                "evil.org",
                "files.example.com.evil.org",
                "bucket",
                "",
                "ann.dfs.core.windows.net",
                "evil.blob.core.windows.net",
                "ann.blob.core.windows.net.evil.org",
            ]
        )
    )
    port = draw(st.sampled_from(["", ":21", ":22", ":443", ":80", ":2121", ":x"]))
    layers = draw(
        st.lists(st.sampled_from(["simplecache", "filecache::", "zip://a", "reference"]), max_size=2)
    )
    return "".join(f"{layer.removesuffix('::')}::" for layer in layers) + f"{kind}://{userinfo}{host}{port}/x"


@settings(max_examples=600, deadline=None)
@given(credential_uris())
def test_the_password_goes_only_where_the_allow_list_says(uri: str) -> None:
    import os

    os.environ["AIRFLOW_CONN_ALLOWLIST"] = json.dumps(
        {"conn_type": "fsspec", "host": "files.example.com", "login": "ann", "password": "pw-c0de"}
    )
    try:
        options = DataStagingHook("allowlist").get_storage_options(uri)
    except StagingError as err:
        assert "pw-c0de" not in str(err)
        return
    finally:
        del os.environ["AIRFLOW_CONN_ALLOWLIST"]
    kind = uri.split("::")[-1].split("://", 1)[0].lower()
    if kind in ("file", "local") and not options:
        return
    assert "pw-c0de" in options.values() and _may_get_credentials(uri), (uri, options)


# -- control characters, and errors that name the caller's field --------------------------------------


@pytest.mark.parametrize(
    ("uri", "shown", "what"),
    [
        ("s3://bucket/x%00.csv", "s3://bucket/x%00.csv", "U+0000 NUL, percent-encoded"),
        ("ftp://h/x%0D%0ARETR%20y", "ftp://h/x%0D%0ARETR%20y", "U+000D carriage return, percent-encoded"),
        ("ftp://h/x%250a", "ftp://h/x%250a", "U+000A line feed, percent-encoded"),
        ("s3://bucket/x\n.csv", "s3://bucket/x\\n.csv", "U+000A line feed"),
        ("ftp://ann:pw-2b\n7@h/x", "ftp://h/x", "U+000A line feed"),  # its password is not repeated
        ("/data/x\x1b[2J.csv", "/data/x\\x1b[2J.csv", "U+001B"),
    ],
)
def test_a_control_character_in_data_is_refused(uri: str, shown: str, what: str) -> None:
    expected = (
        f"data: '{shown}' holds a control character ({what}), which a filesystem or server that decodes "
        "it takes as the end of a protocol command or a log line; write the URI without control characters"
    )
    for call in (DataStagingHook(None).check_allowed, DataStagingHook(None).get_storage_options):
        with pytest.raises(StagingError) as caught:
            call(uri)
        assert str(caught.value) == expected


def test_a_control_character_in_the_sensors_uri_or_marker_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    parquet(root / "part-0.parquet")
    hook = DataStagingHook(None)
    with pytest.raises(StagingError, match=r"^uri: '.*x%0a' holds a control character \(U\+000A line feed"):
        hook.check_readiness(f"{root}/x%0a", require_stable=False)
    for marker in ("_SUCCESS%00", "_SUCCESS\r\n", f"file://{root}/_SUCCESS%0d%0a"):
        with pytest.raises(StagingError, match=r"^success_marker: '.*' holds a control character \(U\+000"):
            hook.check_readiness(str(root), success_marker=marker, require_stable=False)


def test_the_sensors_uri_is_named_uri_in_host_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "files", host="files.example.com", login="ann", password="pw")
    hook = DataStagingHook("files")
    with pytest.raises(
        StagingError, match=r"^uri 'ftp://evil.example.org/x': host 'evil.example.org' is not"
    ):
        hook.check_readiness("ftp://evil.example.org/x", require_stable=False)
    with pytest.raises(
        StagingError, match=r"^uri 'ftp://files.example.com:2121/x': port 2121 is not the port"
    ):
        hook.check_readiness("ftp://files.example.com:2121/x", require_stable=False)
    with pytest.raises(StagingError, match=r"^uri 'dbfs://x': the protocol 'dbfs' is not one whose server"):
        hook.check_readiness("dbfs://x", require_stable=False)
    with pytest.raises(StagingError, match=r"^data 'ftp://evil.example.org/x': host"):
        hook.get_storage_options("ftp://evil.example.org/x")  # the operator's field
    with pytest.raises(StagingError, match=r"^success_marker 'sftp://evil.example.org/_SUCCESS': host"):
        hook._readiness_options("ftp://files.example.com/ds", "sftp://evil.example.org/_SUCCESS")


def test_allowed_prefixes_compare_scheme_and_host_case_insensitively() -> None:
    hook = DataStagingHook(None, allowed_prefixes=["ftp://Files.Example.com/public/"])
    assert hook.check_allowed("ftp://FILES.example.com/public/x.csv")
    assert hook.check_allowed("ftp://ann@files.example.COM/public/x.csv")
    with pytest.raises(StagingError, match=r"^data: 'ftp://files.example.com/PUBLIC/x.csv' is not under"):
        hook.check_allowed("ftp://files.example.com/PUBLIC/x.csv")
    azure = DataStagingHook(None, allowed_prefixes=["abfs://public@acct.dfs.core.windows.net/features/"])
    with pytest.raises(StagingError, match=r"^data: 'abfs://secret@acct.dfs.core.windows.net/features/x'"):
        azure.check_allowed("abfs://secret@acct.dfs.core.windows.net/features/x")  # another container


@pytest.mark.unit
def test_a_marker_outside_the_dataset_is_named_without_the_credentials_of_either_uri() -> None:
    from airflow_provider_sparktune.hooks.staging import check_marker

    with pytest.raises(StagingError) as caught:
        check_marker(
            "ftp://ann:d4t4-pw@files.example.com/ds/", "ftp://bob:m4rk-pw@elsewhere.example.com/_SUCCESS"
        )
    message = str(caught.value)
    assert message.startswith("success_marker: 'ftp://elsewhere.example.com/_SUCCESS' is outside the dataset")
    assert "d4t4-pw" not in message and "m4rk-pw" not in message and "ann:" not in message
