"""The resident dispatcher on a real Spark standalone cluster: an executor lost mid-trial."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.servers import SparkCluster, process_group

DRIVER = """
import json, sys
from pyspark.sql import SparkSession
from airflow_provider_sparktune.tuning.session import run_tuning

master, marker_dir, out = sys.argv[1:4]
spark = (
    SparkSession.builder.master(master).appName("sparktune-executor-loss")
    .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.enabled", "false").getOrCreate()
)

def objective(params, marker_dir):
    import os, time, uuid
    with open(os.path.join(marker_dir, uuid.uuid4().hex + ".pid"), "w") as marks:
        marks.write(str(os.getpid()))
    time.sleep(3)
    return params["x"]

result = run_tuning(
    {"x": {"hp": "uniform", "low": 0, "high": 1}}, objective, spark=spark,
    objective_kwargs={"marker_dir": marker_dir}, max_evals=6, parallelism=2, seed=0,
)
with open(out, "w") as done:
    json.dump({"total": result.trials_total, "ok": result.trials_ok, "failed": result.trials_failed,
               "errors": [r.error for r in result.records if r.error]}, done)
spark.stop()
"""


def parent_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def executor_of(python_worker_pid: int) -> int:
    """The executor JVM above a trial's Python worker (worker <- pyspark daemon <- executor)."""
    pid = python_worker_pid
    for _ in range(3):
        pid = parent_pid(pid)
        if b"CoarseGrainedExecutorBackend" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError(f"no executor process above Python worker {python_worker_pid}")


@pytest.mark.integration
def test_an_executor_lost_mid_trial_fails_that_trial_and_the_run_completes(
    spark_cluster: SparkCluster, tmp_path: Path
) -> None:
    markers, out = tmp_path / "markers", tmp_path / "result.json"
    markers.mkdir()
    cmd = [sys.executable, "-c", DRIVER, spark_cluster.master_url, str(markers), str(out)]
    with process_group(cmd, {"PYSPARK_PYTHON": sys.executable}, tmp_path / "driver.log") as driver:
        deadline = time.monotonic() + 180
        written: list[str] = []
        while not written:  # a marker can exist before its pid is written: wait for the content
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial started on the cluster"
            time.sleep(0.2)
            written = [text for text in (m.read_text().strip() for m in markers.glob("*.pid")) if text]
        worker_pid = int(written[0])
        executor = executor_of(worker_pid)
        killed_at = time.time()
        os.kill(executor, signal.SIGKILL)  # the executor dies with trials running on it
        driver.wait(300)
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    result = json.loads(out.read_text())
    assert result["total"] == 6
    assert 1 <= result["failed"] <= 2  # the trials that ran on the lost executor
    assert all("lost" in error for error in result["errors"]), result["errors"]
    assert result["ok"] == 6 - result["failed"]
    started = list(markers.glob("*.pid"))  # a trial lost before its objective began wrote none
    assert len(started) >= result["ok"]
    assert any(m.stat().st_mtime > killed_at for m in started)  # tasks came back on a new executor
    assert spark_cluster.apps()["activeapps"] == []
