"""What a fresh SparkSession's first run costs on the executors: nothing but the objective's imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

DRIVER = """
import json, sys
from pyspark.sql import SparkSession
from airflow_provider_sparktune.tuning.session import run_tuning

out = sys.argv[1]
spark = (
    SparkSession.builder.master("local[2]").appName("sparktune-cold-start")
    .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.enabled", "false").getOrCreate()
)

def objective(params):
    import sys
    loaded = [name for name in ("hyperopt", "scipy", "networkx", "numpy") if name in sys.modules]
    return {"loss": params["model"]["depth"] if params["model"]["kind"] == "tree" else 10.0,
            "status": "ok", "metrics": {"heavy_modules": float(len(loaded))}}

space = {"model": {"hp": "choice", "options": [
    {"kind": "tree", "depth": {"hp": "quniform", "low": 1, "high": 9, "q": 1}},
    {"kind": "linear"},
]}}
result = run_tuning(space, objective, spark=spark, max_evals=6, parallelism=2, seed=0)
with open(out, "w") as done:
    json.dump({"loaded": [r.metrics["heavy_modules"] for r in result.records],
               "params": [r.params for r in result.records]}, done)
spark.stop()
"""


@pytest.mark.integration
def test_a_fresh_session_s_executors_import_neither_hyperopt_nor_its_dependencies(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["loaded"] == [0.0] * 6  # the driver sent concrete values: no hyperopt, scipy, numpy
    for params in seen["params"]:  # nested choices arrive resolved, as hyperopt would pass them
        model = params["model"]
        assert model["kind"] in ("tree", "linear")
        assert model["kind"] == "linear" or model["depth"] in range(1, 10)


@pytest.mark.unit
def test_every_task_can_connect_to_the_driver_at_the_same_moment() -> None:
    import socket

    from airflow_provider_sparktune.tuning.dispatch.channel import listen

    listener = listen("127.0.0.1", 16)
    sockets = []
    try:  # nobody accepts yet: the kernel must queue all 16, not drop them to be retried 1 s later
        for _ in range(16):
            sockets.append(socket.create_connection(listener.address, timeout=0.8))
    finally:
        for sock in sockets:
            sock.close()
        listener.close()
    assert len(sockets) == 16


@pytest.mark.integration
def test_a_point_the_driver_cannot_turn_into_parameters_fails_that_trial_only(spark: object) -> None:
    from hyperopt import hp
    from hyperopt.pyll import scope

    from airflow_provider_sparktune.tuning.session import run_tuning

    @scope.define
    def sparktune_test_reciprocal(x: float) -> float:
        if x < 0.5:
            raise ZeroDivisionError(f"no reciprocal for {x}")
        return 1 / x

    space = scope.sparktune_test_reciprocal(hp.uniform("x", 0, 1))
    result = run_tuning(space, lambda value: value, spark=spark, max_evals=8, parallelism=2, seed=0)
    failed = [r for r in result.records if r.status == "failed"]
    ok = [r for r in result.records if r.status == "ok"]
    assert failed and ok and len(failed) + len(ok) == 8
    assert all(r.vals["x"] < 0.5 and "no reciprocal for" in (r.error or "") for r in failed)
    assert all(r.vals["x"] >= 0.5 and r.loss == pytest.approx(1 / r.vals["x"]) for r in ok)


NEW_WORKERS = """
import json, os, sys
from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook

hook = SparkSessionHook("cold_workers", spark_conf=json.loads(sys.argv[1]))
spark = hook.get_session()

def first_task(partition):
    import gc, os
    for _ in partition:
        pass
    times = os.times()  # a forked worker starts at zero: what it spent before its first task
    parent = open(f"/proc/{os.getppid()}/cmdline").read().split(chr(0))
    yield {"cpu_s": times.user + times.system, "frozen": gc.get_freeze_count(), "daemon": parent[2]}

print("WORKERS", json.dumps(spark.sparkContext.parallelize(range(4), 4).mapPartitions(first_task).collect()))
hook.stop()
"""


def _new_workers(spark_conf: dict[str, str]) -> list[dict[str, object]]:
    """Four Python workers of a fresh ``local[4]`` session made by the Spark hook, at their first task."""
    conn = json.dumps({"conn_type": "spark", "host": "local[4]"})
    env = {**os.environ, "AIRFLOW_CONN_COLD_WORKERS": conn}
    env.pop("PYSPARK_PYTHON", None)  # the hook's own default
    done = subprocess.run(
        [sys.executable, "-c", NEW_WORKERS, json.dumps(spark_conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("WORKERS "))
    workers: list[dict[str, object]] = json.loads(line.removeprefix("WORKERS "))
    return workers


@pytest.mark.integration
def test_new_python_workers_of_a_hook_session_start_without_compiling_pyspark_again() -> None:
    from airflow_provider_sparktune.tuning.dispatch.daemon import DAEMON_MODULE

    with ThreadPoolExecutor(2) as both:  # two fresh processes side by side: CPU time is what counts
        ours_later = both.submit(_new_workers, {})
        own_later = both.submit(
            _new_workers, {"spark.python.daemon.module": "pyspark.daemon"}
        )  # a user's choice wins
        ours, pyspark_own = ours_later.result(), own_later.result()
    assert {w["daemon"] for w in ours} == {DAEMON_MODULE}
    assert {w["daemon"] for w in pyspark_own} == {"pyspark.daemon"}
    assert all(int(w["frozen"]) > 0 for w in ours)  # forked after gc.freeze(): shared pages stay shared
    ours_cpu = max(float(w["cpu_s"]) for w in ours)
    own_cpu = min(float(w["cpu_s"]) for w in pyspark_own)
    # PySpark's daemon: each worker compiles pyspark.worker from pyspark.zip and re-reads the zips
    # (about 0.4 s of CPU); forked from ours, a worker has that already
    assert ours_cpu < 0.1 < own_cpu, (ours, pyspark_own)
