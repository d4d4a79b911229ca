from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_provider_sparktune.data.staging import BROADCAST_LIMIT_BYTES
from airflow_provider_sparktune.data.storage import open_fs
from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.hooks.staging import DataStagingHook

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
