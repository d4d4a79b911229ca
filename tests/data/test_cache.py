"""Reload cache: one storage read per executor host, shared by processes, renewed when the data changes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_provider_sparktune.data import cache
from airflow_provider_sparktune.exceptions import StagingError

pytestmark = pytest.mark.unit


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "executor-local"
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(root))
    cache.clear_memory()
    yield root
    cache.clear_memory()


def write(path: Path, value: float) -> Path:
    pd.DataFrame({"y": np.full(100, value)}).to_parquet(path)
    return path


def test_a_worker_that_runs_several_trials_reads_once(cache_root: Path, tmp_path: Path) -> None:
    uri = str(write(tmp_path / "f.parquet", 1.0))
    frames = [cache.load(uri, "parquet").value for _ in range(5)]
    assert cache.read_count(uri) == 1
    assert all(f is frames[0] for f in frames)  # served from this process's memory


def test_a_fresh_worker_maps_the_local_copy_instead_of_reading_storage(
    cache_root: Path, tmp_path: Path
) -> None:
    uri = str(write(tmp_path / "f.parquet", 2.0))
    first = cache.load(uri, "parquet").value
    cache.clear_memory()  # what a new Python worker starts with
    second = cache.load(uri, "parquet").value
    assert second is not first and second.equals(first)
    assert cache.read_count(uri) == 1
    assert len(list((cache_root / "sparktune-cache").glob("*.arrow"))) == 1


def test_changed_data_is_read_again_and_the_old_copy_dropped(cache_root: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", 3.0)
    assert cache.load(str(path), "parquet").value["y"].iloc[0] == 3.0
    write(path, 4.0)
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert cache.load(str(path), "parquet").value["y"].iloc[0] == 4.0
    assert cache.read_count(str(path)) == 2
    assert len(list((cache_root / "sparktune-cache").glob("*.arrow"))) == 1


def test_numpy_copy_is_copy_on_write(cache_root: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(10.0))
    uri = str(tmp_path / "x.npy")
    cache.load(uri, "npy")
    cache.clear_memory()
    mapped = cache.load(uri, "npy").value
    mapped[0] = 99.0  # a trial scribbling on its data must not change the next trial's
    cache.clear_memory()
    assert cache.load(uri, "npy").value[0] == 0.0
    assert cache.read_count(uri) == 1


# A first trial in a fresh worker: it waits at a start line with the others, and its storage read is
# slow (one second), so that every worker reaches the cache while the first read is still going on.
FIRST_TRIAL = """
import os, sys, time
from airflow_provider_sparktune.data import cache

uri, start_line, me = sys.argv[1:4]
real_copy = cache.copy_dataset

def slow_copy(*args, **kwargs):
    time.sleep(1.0)
    return real_copy(*args, **kwargs)

cache.copy_dataset = slow_copy
open(os.path.join(start_line, me), "w").close()
while not os.path.exists(os.path.join(start_line, "go")):
    time.sleep(0.01)
print(cache.load(uri, "parquet").value["y"].iloc[0])
"""


def test_concurrent_first_trials_wait_for_one_read(cache_root: Path, tmp_path: Path) -> None:
    """Three workers at once, a read that takes a second: without the file lock each reads."""
    uri = str(write(tmp_path / "f.parquet", 5.0))
    start_line = tmp_path / "start"
    start_line.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_TRIAL, uri, str(start_line), f"worker-{n}"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for n in range(3)
    ]
    deadline = time.monotonic() + 120
    while len(list(start_line.glob("worker-*"))) < 3:  # each imported everything and waits
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    (start_line / "go").touch()
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outputs == ["5.0"] * 3
    assert cache.read_count(uri) == 1


def test_data_gone_since_planning_is_a_clear_error(cache_root: Path, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match=rf"data '{tmp_path}/gone.parquet': no such file or directory"):
        cache.load(str(tmp_path / "gone.parquet"), "parquet")


def test_a_cache_dir_at_its_cap_removes_the_least_recently_used_copies(
    cache_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nightly ``ds=`` URIs: each night a new dataset; the cache never grows past its cap."""
    nights = [write(tmp_path / f"ds={night}.parquet", float(night)) for night in range(4)]
    sizes = []
    for night in nights[:2]:
        cache.load(str(night), "parquet")
        sizes.extend(p.stat().st_size for p in (cache_root / "sparktune-cache").glob("*.arrow"))
    monkeypatch.setenv(cache.CACHE_MAX_BYTES_ENV, str(2 * max(sizes) + 1))  # room for two copies
    cache.load(str(nights[0]), "parquet")  # night 0 used again: night 1 is now the oldest
    for night in nights[2:]:
        assert cache.load(str(night), "parquet").value["y"].iloc[0] == float(nights.index(night))
    left = sorted((cache_root / "sparktune-cache").glob("*.arrow"))
    assert len(left) == 2
    assert cache.read_count(str(nights[3])) == 1
    cache.clear_memory()
    cache.load(str(nights[3]), "parquet")  # the newest stayed: no second read
    assert cache.read_count(str(nights[3])) == 1
    cache.load(str(nights[1]), "parquet")  # evicted: read again
    assert cache.read_count(str(nights[1])) == 2


def test_the_cap_reads_sizes_with_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.CACHE_MAX_BYTES_ENV, "20GiB")
    assert cache.cache_max_bytes() == 20 * 1024**3
    monkeypatch.setenv(cache.CACHE_MAX_BYTES_ENV, "lots")
    with pytest.raises(StagingError, match="SPARKTUNE_CACHE_MAX_BYTES: 'lots' is not a number of bytes"):
        cache.cache_max_bytes()


def test_a_reused_worker_keeps_its_latest_datasets_not_every_night(cache_root: Path, tmp_path: Path) -> None:
    from airflow_provider_sparktune.data import host_copy

    for night in range(8):
        cache.load(str(write(tmp_path / f"ds={night}.parquet", float(night))), "parquet")
    assert len(cache._memory) == 1
    assert len(host_copy._opened) <= 4
