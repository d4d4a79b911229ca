"""The host copy: written once, mapped by every worker, the same data a plain pyarrow/numpy read gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_sparktune.data.host_copy import (
    copy_dataset,
    forget_opened,
    open_host_copy,
    write_host_copy,
)
from airflow_provider_sparktune.data.storage import read_raw

pytestmark = pytest.mark.unit


def mixed_parquet(path: Path, rows: int = 3000) -> Path:
    """Floats, ints, an int column with nulls, strings and dates, in several row groups (chunks)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "n": np.arange(rows, dtype=np.int64),
            "holes": pd.array([None if i % 7 == 0 else i for i in range(rows)], dtype="Int64"),
            "label": [f"c{i % 3}" for i in range(rows)],
            "day": pd.date_range("2026-01-01", periods=rows, freq="min"),
        }
    )
    pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=500)
    return path


def test_the_mapped_frame_equals_a_plain_pyarrow_read(tmp_path: Path) -> None:
    source = mixed_parquet(tmp_path / "mixed.parquet")
    copy_path = str(tmp_path / "copy.arrow")
    write_host_copy(read_raw(str(source), "parquet"), copy_path, "parquet")
    copy = open_host_copy(copy_path, "parquet")
    pd.testing.assert_frame_equal(copy.value, pq.read_table(source).to_pandas())
    assert copy.arrow.equals(pq.read_table(source))
    assert all(copy.arrow.column(name).num_chunks == 1 for name in copy.arrow.column_names)


def test_numeric_columns_are_views_of_the_mapping_and_read_only(tmp_path: Path) -> None:
    source = mixed_parquet(tmp_path / "mixed.parquet")
    copy_path = str(tmp_path / "copy.arrow")
    write_host_copy(read_raw(str(source), "parquet"), copy_path, "parquet")
    frame = open_host_copy(copy_path, "parquet").value
    for column in ("x", "n"):
        values = frame[column].to_numpy()
        assert not values.flags.owndata and not values.flags.writeable, column
    with pytest.raises(ValueError, match="read-only"):
        frame.loc[0, "x"] = 1.0  # a trial cannot change what the next trial on this host reads
    assert frame["label"].to_numpy().flags.writeable  # strings: pandas' own copy


def test_a_worker_opens_a_copy_once(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(10.0))
    copy_path = str(tmp_path / "copy.npy")
    write_host_copy(read_raw(str(tmp_path / "a.npy"), "npy"), copy_path, "npy")
    first = open_host_copy(copy_path, "npy")
    assert open_host_copy(copy_path, "npy") is first
    forget_opened()
    assert open_host_copy(copy_path, "npy") is not first


def test_npz_arrays_are_mapped_copy_on_write_inside_the_archive(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "d.npz", X=np.arange(12.0).reshape(3, 4), y=np.arange(3))
    copy_path = str(tmp_path / "copy.npz")
    write_host_copy(read_raw(str(tmp_path / "d.npz"), "npz"), copy_path, "npz")
    arrays = open_host_copy(copy_path, "npz").value
    assert isinstance(arrays["X"], np.memmap) and arrays["X"].shape == (3, 4)
    np.testing.assert_array_equal(arrays["X"], np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(arrays["y"], np.arange(3))
    arrays["X"][0, 0] = 99.0  # private to this process
    forget_opened()
    assert open_host_copy(copy_path, "npz").value["X"][0, 0] == 0.0


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))


def test_processes_that_map_one_copy_share_its_pages(tmp_path: Path) -> None:
    """Four processes touch every page of a 64 MiB copy: together they hold it about once, not 4 times."""
    rows = 8 * 1024**2 // 8 * 8  # 64 MiB of float64 in 8 columns
    table = pa.table({f"c{i}": np.random.default_rng(i).normal(size=rows // 8) for i in range(8)})
    copy_path = str(tmp_path / "copy.arrow")
    size = write_host_copy(table, copy_path, "parquet")
    code = (
        "import sys, os; from airflow_provider_sparktune.data.host_copy import open_host_copy; "
        "frame = open_host_copy(sys.argv[1], 'parquet').value; total = float(frame.sum().sum()); "
        "print('ready', flush=True); sys.stdin.readline()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, copy_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        alone = subprocess.run(
            [
                sys.executable,
                "-c",
                "import pandas, pyarrow, os; print(open(f'/proc/{os.getpid()}/smaps_rollup').read())",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        baseline_kib = next(
            int(line.split()[1]) for line in alone.stdout.splitlines() if line.startswith("Pss:")
        )
        data_kib = sum(pss_kib(proc.pid) for proc in procs) - 4 * baseline_kib
        assert data_kib < 1.5 * size / 1024, (data_kib, size / 1024)  # one copy, shared; 4 copies unshared
    finally:
        for proc in procs:
            proc.communicate("\n", timeout=60)
    assert all(proc.returncode == 0 for proc in procs)
    assert os.path.getsize(copy_path) == size


PEAK_PROBE = """
import sys
from airflow_provider_sparktune.data.host_copy import copy_dataset

def high_water_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

import pyarrow, pyarrow.dataset, pyarrow.parquet, numpy  # imported before the baseline
before = high_water_kib()
copy_dataset(sys.argv[1], "parquet", None, sys.argv[2])
print((high_water_kib() - before) * 1024)
"""


def copy_peak_bytes(source: Path, copy: Path) -> int:
    """How far copying ``source`` raised a fresh process's peak resident memory."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, str(source), str(copy)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def wide_parquet(path: Path, rows: int = 1_000_000, text: bool = False) -> int:
    """8 float columns (8 MB each) in 50 row groups; bytes in memory."""
    columns = {f"c{i}": np.random.default_rng(i).normal(size=rows) for i in range(8)}
    if text:
        columns["label"] = np.array(["a", "b"] * (rows // 2))
    pq.write_table(pa.table(columns), path, row_group_size=rows // 50)
    return pq.read_table(path).nbytes


def test_numeric_parquet_streams_into_the_copy_without_holding_the_data(tmp_path: Path) -> None:
    """The driver (the Airflow worker) in broadcast mode: a column chunk at a time, not the dataset."""
    data = wide_parquet(tmp_path / "wide.parquet")
    peak = copy_peak_bytes(tmp_path / "wide.parquet", tmp_path / "copy.arrow")
    assert peak < 0.4 * data, (peak, data)  # a column of a row group at a time
    with pa.memory_map(str(tmp_path / "copy.arrow")) as source:
        copied = pa.ipc.open_file(source).read_all()
    assert copied.equals(pq.read_table(tmp_path / "wide.parquet"))
    assert all(copied.column(name).num_chunks == 1 for name in copied.column_names)


def test_null_floats_stream_as_nan_and_null_integers_take_the_whole_table_path(tmp_path: Path) -> None:
    table = pa.table(
        {
            "f": pa.array([1.0, None, 3.0] * 1000, pa.float64()),
            "i": pa.array([1, 2, 3] * 1000, pa.int64()),
            "holes": pa.array([1, None, 3] * 1000, pa.int64()),
        }
    )
    pq.write_table(table.select(["f", "i"]), tmp_path / "floats.parquet", row_group_size=500)
    pq.write_table(table, tmp_path / "ints.parquet", row_group_size=500)
    for name in ("floats", "ints"):
        copy_path = str(tmp_path / f"{name}.arrow")
        write_copy = copy_dataset(str(tmp_path / f"{name}.parquet"), "parquet", None, copy_path)
        assert write_copy == os.path.getsize(copy_path)
        pd.testing.assert_frame_equal(
            open_host_copy(copy_path, "parquet").value,
            pq.read_table(tmp_path / f"{name}.parquet").to_pandas(),
        )


def test_a_hive_partitioned_dataset_reads_as_pyarrow_reads_it(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(600.0), "day": [f"2026-01-0{1 + i % 3}" for i in range(600)]})
    pq.write_to_dataset(pa.Table.from_pandas(frame), tmp_path / "hive", partition_cols=["day"])
    raw = read_raw(str(tmp_path / "hive"), "parquet")
    assert raw.equals(pq.read_table(tmp_path / "hive"))
    copy_path = str(tmp_path / "copy.arrow")
    write_host_copy(raw, copy_path, "parquet")
    pd.testing.assert_frame_equal(
        open_host_copy(copy_path, "parquet").value, pq.read_table(tmp_path / "hive").to_pandas()
    )
