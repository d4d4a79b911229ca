"""The broadcast-or-reload plan, sensor readiness, and both staging modes end to end on local Spark."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark import cloudpickle

from airflow_provider_sparktune.data.staged import StagedData
from airflow_provider_sparktune.data.staging import (
    BROADCAST_LIMIT_BYTES,
    StagingPlan,
    check_readiness,
    decide,
    format_bytes,
    parse_bytes,
    plan_dataset,
)
from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.tuning.prepare import prepare_run
from airflow_provider_sparktune.tuning.run import execute_run

SPACE = {"a": {"hp": "uniform", "low": 0, "high": 6}}
GIB = 1024**3


def write_features(path: Path, rows: int = 400, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pd.DataFrame({"x": rng.normal(size=rows), "y": rng.normal(loc=3.0, size=rows)}).to_parquet(path)
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file that says ``size`` bytes but occupies (almost) no disk."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def mapped_file(values: Any) -> tuple[str, int]:
    """The file (path, inode) whose mapping holds ``values``' memory, or ("", 0) for private memory."""
    address = values.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            low, high = (int(bound, 16) for bound in parts[0].split("-"))
            if low <= address < high and len(parts) >= 6:
                return parts[5], int(parts[4])
    return "", 0


def mean_objective(params: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """Loss depends on the data; metrics say how the data arrived, in which process, from which copy."""
    from airflow_provider_sparktune.data.cache import read_count

    frame = data.value
    _, inode = mapped_file(frame["y"].to_numpy())
    return {
        "loss": float((params["a"] - frame["y"].mean()) ** 2),
        "metrics": {
            "rows": len(frame),
            "pid": os.getpid(),
            "via_broadcast": int(data.shipped_copy is not None),
            "storage_reads": read_count(data.plan.uri),
            "copy_inode": inode,
            "frame_hash": float(pd.util.hash_pandas_object(frame).sum() % 2**52),
        },
    }


# --------------------------------------------------------------------------------------------------
# pure logic
# --------------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2147483648, 2 * GIB),
        ("2147483648", 2 * GIB),
        ("2GiB", 2 * GIB),
        ("2 GiB", 2 * GIB),
        ("512MiB", 512 * 1024**2),
        ("1.5GB", 1_500_000_000),
        ("10kb", 10_000),
        (0, 0),
    ],
)
def test_parse_bytes(value: Any, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.unit
@pytest.mark.parametrize("value", ["two gigs", "2 parsecs", "-5", True, float("nan")])
def test_parse_bytes_rejects_non_sizes_naming_the_field(value: Any) -> None:
    with pytest.raises(StagingError, match="broadcast_threshold_bytes: "):
        parse_bytes(value)


@pytest.mark.unit
def test_decision_is_broadcast_strictly_below_the_threshold() -> None:
    assert decide(BROADCAST_LIMIT_BYTES - 1, BROADCAST_LIMIT_BYTES)[0] == "broadcast"
    mode, reason = decide(BROADCAST_LIMIT_BYTES, BROADCAST_LIMIT_BYTES)
    assert mode == "reload"
    assert "2.0 GiB" in reason and "once per executor" in reason
    assert format_bytes(1536) == "1.5 KiB"


@pytest.mark.unit
def test_plan_travels_as_json_and_as_rendered_template_text(tmp_path: Path) -> None:
    plan = plan_dataset(str(write_features(tmp_path / "f.parquet")))
    as_dict = plan.to_dict()
    assert set(as_dict) == {"uri", "format", "size_bytes", "threshold_bytes", "mode", "reason"}
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert StagingPlan.from_value(as_dict) == plan
    assert StagingPlan.from_value(plan.to_json()) == plan
    assert StagingPlan.from_value(str(as_dict)) == plan  # what "{{ ti.xcom_pull(...) }}" renders to


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{not json", "data: '{not json' is neither a dataset URI nor a staging plan"),
        (
            {"uri": "/x.parquet"},
            "data: the staging plan lacks ['format', 'size_bytes', 'threshold_bytes', 'mode']",
        ),
        (
            {"uri": "/x", "format": "parquet", "size_bytes": 1, "threshold_bytes": 2, "mode": "teleport"},
            "data.mode: 'teleport' is not one of broadcast, reload",
        ),
        (42, "data: expected a dataset URI or a staging plan (dict), got int"),
    ],
)
def test_bad_plans_name_the_field(value: Any, fragment: str) -> None:
    with pytest.raises(StagingError) as exc:
        StagingPlan.from_value(value)
    assert fragment in str(exc.value)


@pytest.mark.unit
def test_threshold_below_the_size_forces_reload(tmp_path: Path) -> None:
    path = write_features(tmp_path / "f.parquet")
    size = path.stat().st_size
    assert plan_dataset(str(path)).mode == "broadcast"
    plan = plan_dataset(str(path), threshold_bytes=size - 1)
    assert (plan.mode, plan.size_bytes, plan.threshold_bytes) == ("reload", size, size - 1)
    assert plan.with_threshold(size + 1).mode == "broadcast"


@pytest.mark.unit
def test_a_file_above_2_gib_is_planned_reload_without_reading_it(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge.parquet", 3 * GIB)  # zeros: reading it as Parquet would fail
    assert path.stat().st_blocks * 512 < 1024**2  # the test did not write 3 GiB
    started = time.monotonic()
    plan = plan_dataset(str(path))
    assert time.monotonic() - started < 5
    assert (plan.mode, plan.size_bytes, plan.threshold_bytes) == ("reload", 3 * GIB, BROADCAST_LIMIT_BYTES)
    assert "3.0 GiB" in plan.reason


@pytest.mark.unit
def test_a_directory_of_parts_adds_up_above_2_gib(tmp_path: Path) -> None:
    root = tmp_path / "spark-output"
    root.mkdir()
    for i in range(3):  # 3 x 800 MiB = 2.34 GiB, each part far below the limit on its own
        sparse_file(root / f"part-{i:05d}.snappy.parquet", 800 * 1024**2)
    (root / "_SUCCESS").touch()
    plan = plan_dataset(str(root))
    assert (plan.format, plan.mode, plan.size_bytes) == ("parquet", "reload", 3 * 800 * 1024**2)


@pytest.mark.unit
def test_missing_and_empty_datasets_name_the_uri_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        StagingError, match=rf"data '{tmp_path}/nope.parquet': no such file or directory; check"
    ):
        plan_dataset(str(tmp_path / "nope.parquet"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").touch()
    with pytest.raises(StagingError, match=rf"data '{tmp_path}/empty': the directory holds no data files"):
        plan_dataset(str(tmp_path / "empty"))
    (tmp_path / "zero.parquet").touch()
    with pytest.raises(StagingError, match=r"the dataset is empty \(0 bytes\)"):
        plan_dataset(str(tmp_path / "zero.parquet"))


@pytest.mark.unit
def test_readiness_exists_then_marker_then_stable_size(tmp_path: Path) -> None:
    root = tmp_path / "out"
    check = {"success_marker": "_SUCCESS", "min_size_bytes": 100}
    first = check_readiness(str(root), **check)
    assert not first.ready and "does not exist yet" in first.message
    root.mkdir()
    assert "holds no data yet" in check_readiness(str(root), success_marker=None).message
    write_features(root / "part-0.parquet")
    assert "waiting for its success marker '_SUCCESS'" in check_readiness(str(root), **check).message
    (root / "_SUCCESS").touch()
    seen = check_readiness(str(root), **check)
    assert not seen.ready and "first sight" in seen.message and seen.observed is not None
    write_features(root / "part-1.parquet", seed=1)  # still being written
    grown = check_readiness(str(root), previous=seen.observed, **check)
    assert not grown.ready and f"was {seen.observed[0]} bytes" in grown.message
    ready = check_readiness(str(root), previous=grown.observed, **check)
    assert ready.ready and ready.plan is not None
    assert ready.plan.size_bytes == grown.observed[0]  # type: ignore[index]
    too_small = check_readiness(
        str(root), previous=grown.observed, success_marker="_SUCCESS", min_size_bytes=10**9
    )
    assert not too_small.ready and "waiting for at least" in too_small.message


@pytest.mark.unit
def test_handle_pickles_and_never_shows_credentials(tmp_path: Path) -> None:
    plan = plan_dataset(str(write_features(tmp_path / "f.parquet")))
    data = StagedData.open(plan, {"secret": "hunter2"})
    assert data.columns == ("x", "y") and data.rows == 400
    assert "hunter2" not in repr(data)
    copy = cloudpickle.loads(cloudpickle.dumps(data))
    assert copy.plan == plan and copy.shipped_copy is None


# --------------------------------------------------------------------------------------------------
# a URI's own credentials: used to read, never written in a message, a log line or a repr
# --------------------------------------------------------------------------------------------------

FTP_USER, FTP_PASSWORD = "ann", "it's-p@ss:4b1d"


@pytest.fixture
def ftp_data(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    from tests.servers import ftp_server

    root = tmp_path / "ftp"
    (root / "empty").mkdir(parents=True)
    (root / "empty" / "_SUCCESS").touch()
    with ftp_server(root, FTP_USER, FTP_PASSWORD) as server:
        yield server, root


def logged_in(server: Any, path: str) -> str:
    return server.uri(path).replace("ftp://", f"ftp://{FTP_USER}:{FTP_PASSWORD}@", 1)


def assert_hidden(text: str) -> None:
    from urllib.parse import quote

    for form in (FTP_PASSWORD, quote(FTP_PASSWORD, safe=""), quote(FTP_PASSWORD), f"{FTP_USER}:"):
        assert form not in text, text


@pytest.mark.unit
def test_plans_and_readiness_name_the_uri_without_its_login(
    ftp_data: tuple[Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server, root = ftp_data
    for path, fragment in (("missing/", "no such file or directory"), ("empty", "holds no data files")):
        with pytest.raises(StagingError) as caught:
            plan_dataset(logged_in(server, path))
        assert str(caught.value).startswith(f"data '{server.uri(path)}'") and fragment in str(caught.value)
        assert_hidden(str(caught.value))
    messages = [check_readiness(logged_in(server, "ds/"), success_marker="_SUCCESS").message]
    (root / "ds").mkdir()
    write_features(root / "ds" / "part-0.parquet")
    messages.append(check_readiness(logged_in(server, "ds/"), success_marker="_SUCCESS").message)
    (root / "ds" / "_SUCCESS").touch()
    first = check_readiness(logged_in(server, "ds/"), success_marker="_SUCCESS")
    ready = check_readiness(logged_in(server, "ds/"), previous=first.observed, success_marker="_SUCCESS")
    messages += [first.message, ready.message]
    assert ready.ready and ready.plan is not None
    assert ready.plan.uri == logged_in(server, "ds/")  # the plan keeps what reads the data
    assert messages[0] == f"{server.uri('ds/')} does not exist yet"
    assert "waiting for its success marker" in messages[1] and "is ready" in messages[3]
    for message in messages:
        assert message.startswith(server.uri("ds/")), message
        assert_hidden(message)
    with caplog.at_level(logging.INFO):
        data = StagedData.open(ready.plan)
        assert data.rows == 400  # the login in the URI read the data
        assert_hidden(repr(data))
        data._fall_back_to_reload("a reason")
        data.release()
    assert caplog.text and server.uri("ds/") in caplog.text
    assert_hidden(caplog.text)


@pytest.mark.unit
def test_text_that_is_no_plan_is_quoted_without_credentials() -> None:
    text = (
        "ftp://ann:"
        + FTP_PASSWORD
        + "@files.example.com/some/long/path/to/a/dataset/that/goes/on/features.parquet"
    )
    with pytest.raises(StagingError) as caught:
        StagingPlan.from_value(text + " and (", "data")
    assert str(caught.value).startswith("data: 'ftp://files.example.com/some/long")
    assert_hidden(str(caught.value))


# --------------------------------------------------------------------------------------------------
# both modes on a real local Spark session
# --------------------------------------------------------------------------------------------------


def run_mode(spark: Any, data: StagedData, seen: dict[str, Any]) -> Any:
    prepared = prepare_run(SPACE, mean_objective, data=data, max_evals=6, parallelism=2, seed=11)

    def on_start(spec: Any, facts: Any) -> None:
        seen["shipped"] = data.shipped_copy
        seen["driver_copy"] = data._driver_path
        seen["plan_at_start"] = data.plan

    return execute_run(prepared, spark, on_start=on_start)


@pytest.fixture(scope="module")
def both_modes(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same objective, data and seed, once broadcast and once reloaded (threshold below the size)."""
    path = write_features(tmp_path_factory.mktemp("staging") / "features.parquet")
    runs: dict[str, Any] = {}
    for mode, threshold in (("broadcast", BROADCAST_LIMIT_BYTES), ("reload", path.stat().st_size // 2)):
        data = StagedData.open(plan_dataset(str(path), threshold_bytes=threshold))
        seen: dict[str, Any] = {}
        result = run_mode(spark, data, seen)
        runs[mode] = {"data": data, "result": result, **seen}
    return runs


@pytest.mark.integration
def test_both_modes_give_the_same_results_for_the_same_seed(both_modes: dict[str, Any]) -> None:
    broadcast, reload = both_modes["broadcast"], both_modes["reload"]
    assert broadcast["data"].plan.mode == "broadcast" and reload["data"].plan.mode == "reload"
    losses = {mode: [(r.tid, r.loss) for r in run["result"].records] for mode, run in both_modes.items()}
    assert len(losses["broadcast"]) == 6
    assert losses["broadcast"] == losses["reload"]
    assert broadcast["result"].best_params == reload["result"].best_params
    for mode, run in both_modes.items():
        assert all(r.metrics["rows"] == 400 for r in run["result"].records), mode
    assert {r.metrics["via_broadcast"] for r in broadcast["result"].records} == {1.0}
    assert {r.metrics["via_broadcast"] for r in reload["result"].records} == {0.0}


@pytest.mark.integration
def test_every_trial_of_both_modes_reads_one_mapped_copy_equal_to_a_pyarrow_read(
    both_modes: dict[str, Any],
) -> None:
    import pyarrow.parquet as pq

    expected = pq.read_table(both_modes["broadcast"]["data"].plan.uri).to_pandas()
    expected_hash = float(pd.util.hash_pandas_object(expected).sum() % 2**52)
    for mode, run in both_modes.items():
        records = run["result"].records
        assert {r.metrics["frame_hash"] for r in records} == {expected_hash}, mode
        inodes = {r.metrics["copy_inode"] for r in records}
        assert len(inodes) == 1 and 0 not in inodes, (mode, inodes)  # views of one file, in every worker


@pytest.mark.integration
def test_the_drivers_copy_is_removed_when_the_run_ends(both_modes: dict[str, Any]) -> None:
    shipped, driver_copy = both_modes["broadcast"]["shipped"], both_modes["broadcast"]["driver_copy"]
    assert shipped is not None and driver_copy.endswith(shipped)  # it existed while the trials ran
    assert both_modes["broadcast"]["data"].shipped_copy is None
    assert not os.path.exists(driver_copy)
    assert both_modes["reload"]["shipped"] is None


@pytest.mark.integration
def test_reload_reads_storage_once_for_all_trials_of_the_executor(both_modes: dict[str, Any]) -> None:
    from airflow_provider_sparktune.data.cache import read_count

    reload = both_modes["reload"]
    records = reload["result"].records
    assert read_count(reload["data"].plan.uri) == 1  # observed by the executors' own counter file
    assert max(r.metrics["storage_reads"] for r in records) == 1
    assert read_count(both_modes["broadcast"]["data"].plan.uri) == 1  # same file: broadcast added no read


@pytest.mark.integration
def test_compressed_data_that_serializes_past_the_limit_falls_back_to_reload(
    spark: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "zeros.parquet"
    pd.DataFrame({"z": np.zeros(200_000)}).to_parquet(path)  # a few KiB on disk, 1.6 MB uncompressed
    threshold = 200_000
    data = StagedData.open(plan_dataset(str(path), threshold_bytes=threshold))
    assert data.plan.mode == "broadcast" and data.plan.size_bytes < threshold
    with caplog.at_level(logging.WARNING, logger="airflow_provider_sparktune.data.staged"):
        plan = data.attach(spark)
    assert plan.mode == "reload" and data.plan is plan and data.shipped_copy is None
    assert "1.5 MiB uncompressed, not below" in plan.reason and "fell back to reload" in plan.reason
    assert any("fell back to reload" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_a_plan_that_understates_the_size_is_measured_again_before_a_broadcast(
    spark: Any, tmp_path: Path
) -> None:
    path = write_features(tmp_path / "features.parquet", rows=20_000)
    size = path.stat().st_size
    claimed = StagingPlan.from_value(
        {
            "uri": str(path),
            "format": "parquet",
            "size_bytes": 1,
            "threshold_bytes": size // 2,
            "mode": "broadcast",
        }
    )
    data = StagedData(claimed)
    plan = data.attach(spark)
    assert plan.mode == "reload" and plan.size_bytes == size and data.shipped_copy is None
    assert "not below the broadcast threshold" in plan.reason


@pytest.mark.integration
def test_storage_options_stay_on_the_driver_once_the_copy_is_shipped(spark: Any, tmp_path: Path) -> None:
    path = write_features(tmp_path / "features.parquet")
    data = StagedData(plan_dataset(str(path)), storage_options={"secret": "hunter2"})
    assert b"hunter2" in cloudpickle.dumps(data)  # reload mode: the executors need them to read
    data.attach(spark)
    try:
        assert data.shipped_copy is not None and b"hunter2" not in cloudpickle.dumps(data)
    finally:
        data.release()


@pytest.mark.integration
def test_reload_cache_is_shared_by_the_python_workers_of_an_executor(spark: Any, tmp_path: Path) -> None:
    """With one fresh Python worker per trial (raw SparkTrials) a per-process cache would read 4 times.

    The resident dispatcher may give every trial to one long-lived worker, which proves nothing
    about sharing between processes; this run guarantees several processes.
    """
    from airflow_provider_sparktune.data.cache import read_count

    path = write_features(tmp_path / "features.parquet")
    data = StagedData.open(plan_dataset(str(path), threshold_bytes=path.stat().st_size // 2))
    prepared = prepare_run(
        SPACE, mean_objective, data=data, max_evals=4, parallelism=2, seed=11, dispatcher="sparktrials"
    )
    records = execute_run(prepared, spark).records
    assert data.plan.mode == "reload" and len(records) == 4
    assert len({r.metrics["pid"] for r in records}) == 4  # four processes read the data
    assert read_count(data.plan.uri) == 1  # and storage was read once


# --------------------------------------------------------------------------------------------------
# two hosts: a standalone cluster with two workers
# --------------------------------------------------------------------------------------------------

TWO_HOSTS_DRIVER = r"""
import json, os, sys, time
from pyspark.sql import SparkSession

master, uri, out = sys.argv[1:4]
spark = (
    SparkSession.builder.master(master).appName("sparktune-two-hosts")
    .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1").config("spark.executor.cores", "1")
    .config("spark.executor.memory", "1g").getOrCreate()
)
from airflow_provider_sparktune import run_tuning
from airflow_provider_sparktune.data.staged import StagedData
from airflow_provider_sparktune.data.staging import plan_dataset


def probe(params, data=None):
    frame = data.value
    address = frame["y"].to_numpy().__array_interface__["data"][0]
    inode = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            low, high = (int(bound, 16) for bound in parts[0].split("-"))
            if low <= address < high and len(parts) >= 6:
                inode = int(parts[4])
    time.sleep(1.0)  # both executors get trials
    executor = float(os.path.basename(os.getcwd()))  # a standalone executor runs in <work>/<app>/<id>
    return {"loss": abs(params["a"]), "metrics": {"executor": executor, "inode": inode, "rows": len(frame)}}


runs = {}
for mode, threshold in (("broadcast", "1GiB"), ("reload", "1B")):
    staged = StagedData.open(plan_dataset(uri, threshold_bytes=threshold))
    result = run_tuning(
        {"a": {"hp": "uniform", "low": -1, "high": 1}}, probe, spark=spark, data=staged,
        max_evals=8, parallelism=2, seed=1,
    )
    runs[mode] = {"mode": staged.plan.mode, "trials": [r.metrics for r in result.records]}
spark.stop()
with open(out, "w") as f:
    json.dump(runs, f)
"""


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.servers import spark_standalone_cluster

    with spark_standalone_cluster(tmp_path_factory.mktemp("two-hosts"), cores=1, workers=2) as cluster:
        yield cluster


@pytest.mark.integration
def test_each_host_of_a_cluster_maps_its_own_single_copy_in_both_modes(
    two_hosts: Any, tmp_path: Path
) -> None:
    import sys

    from tests.servers import process_group

    path = write_features(tmp_path / "features.parquet")
    out, log = tmp_path / "runs.json", tmp_path / "driver.log"
    cmd = [sys.executable, "-c", TWO_HOSTS_DRIVER, two_hosts.master_url, str(path), str(out)]
    with process_group(cmd, {"PYSPARK_PYTHON": sys.executable}, log) as driver:
        driver.wait(600)
    assert driver.returncode == 0, log.read_text()[-3000:]
    runs = json.loads(out.read_text())
    for mode in ("broadcast", "reload"):
        trials = runs[mode]["trials"]
        assert runs[mode]["mode"] == mode and len(trials) == 8
        assert {t["rows"] for t in trials} == {400}
        copies: dict[float, set[float]] = {}
        for trial in trials:
            copies.setdefault(trial["executor"], set()).add(trial["inode"])
        assert len(copies) == 2, (mode, copies)  # both hosts ran trials
        assert all(len(inodes) == 1 and 0 not in inodes for inodes in copies.values()), (mode, copies)
        first, second = copies.values()
        assert first != second, (mode, copies)  # each host its own copy, mapped by all of its workers
