from __future__ import annotations

import json
from pathlib import Path

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
    hook = DataStagingHook("no_such_data_conn")
    assert hook.size(str(root)) == size
    plan = hook.plan(str(root))
    assert (plan.mode, plan.threshold_bytes, plan.format) == ("broadcast", BROADCAST_LIMIT_BYTES, "parquet")
    small = DataStagingHook("no_such_data_conn", broadcast_threshold_bytes=f"{size - 1}B").plan(str(root))
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
