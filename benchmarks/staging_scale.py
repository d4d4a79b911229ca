"""Staging at scale: memory (PSS per process kind) and time to the first result, GiB-sized data, both modes.

A tuning task always starts a fresh SparkSession, so every case runs cold in a child process of its
own: ``local[P]``, ``StagedData.open(plan_dataset(...))`` and ``run_tuning`` with ``max_evals``
trials whose objective reads ``data.value`` and touches every value of it (then sleeps, so that all
P Python workers hold the data at once while memory is sampled). The dataset is 16 float64 columns of
Parquet. The floor is one ``pyarrow.parquet.read_table`` of the same files in a fresh process: its
time and its peak memory.

Memory is PSS (``/proc/PID/smaps_rollup``: pages shared between processes are split between them),
sampled every 0.2 s over the child's process tree and summed per kind: the driver (the Airflow worker's
process), the JVM, the Python workers (PySpark's daemon and the workers it forks). "host" is the peak
of the sum of all three at one instant. "first result" is the time from ``StagedData.open`` to the
first trial that had touched all of its data (the session start is before it and reported apart);
"data.value first" is, per Python worker, its first call of ``data.value``; "later" the slowest
call after a worker's first.

    .venv/bin/python benchmarks/staging_scale.py                       # 1 and 2 GiB, P = 2 and 4
    .venv/bin/python benchmarks/staging_scale.py --gib 0.25 --parallelism 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COLUMNS = 16
GIB = 1024**3
HOLD_S = 3.0  # every trial holds its data this long after touching it: all workers are sampled holding it


def objective(params: dict[str, Any], data: Any = None) -> dict[str, Any]:
    import pandas  # noqa: F401  # imported before the clock starts: measure the data, not the imports
    import pyarrow  # noqa: F401

    started = time.perf_counter()
    frame = data.value
    got = time.perf_counter() - started
    total = sum(float(frame[column].sum()) for column in frame.columns)  # every page of every column
    touched_at = time.time()
    time.sleep(HOLD_S)
    return {
        "loss": abs(params["a"]) + 0.0 * total,
        "metrics": {"data_value_s": got, "pid": os.getpid(), "touched_at": touched_at},
    }


def write_dataset(path: Path, gib: float) -> int:
    """``gib`` GiB of float64 in 16 columns, written in row groups (never the whole table in memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, batch = int(gib * GIB) // (8 * COLUMNS), 1_048_576
    rng = np.random.default_rng(0)
    schema = pa.schema([(f"c{i}", pa.float64()) for i in range(COLUMNS)])
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            writer.write_table(pa.table({f"c{i}": rng.normal(size=n) for i in range(COLUMNS)}, schema=schema))
    return rows


# ---- children: each measurement in a fresh process ----------------------------------------------------


def floor_child(case: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table = pq.read_table(case["uri"])
    return {"read_s": time.perf_counter() - started, "in_memory_bytes": table.nbytes}


def run_child(case: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_dispatch import local_session

    from airflow_provider_sparktune import run_tuning
    from airflow_provider_sparktune.data.staged import StagedData
    from airflow_provider_sparktune.data.staging import plan_dataset

    began = time.perf_counter()
    spark = local_session(f"local[{case['p']}]", "sparktune-staging-scale")
    spark.sparkContext.parallelize(range(case["p"]), case["p"]).count()  # the Python daemon starts here
    session_s = time.perf_counter() - began
    t0 = time.time()
    staged = StagedData.open(plan_dataset(case["uri"], threshold_bytes=case["threshold"]))
    result = run_tuning(
        {"a": {"hp": "uniform", "low": -1, "high": 1}},
        objective,
        spark=spark,
        data=staged,
        max_evals=case["n"],
        parallelism=case["p"],
        seed=0,
    )
    spark.stop()
    first_per_worker: dict[int, float] = {}
    later = [0.0]
    for record in sorted(result.records, key=lambda r: r.metrics["touched_at"]):
        pid = int(record.metrics["pid"])
        if pid in first_per_worker:
            later.append(record.metrics["data_value_s"])
        else:
            first_per_worker[pid] = record.metrics["data_value_s"]
    return {
        "session_s": session_s,
        "first_result_s": min(r.metrics["touched_at"] for r in result.records) - t0,
        "data_value_first_s": sorted(first_per_worker.values()),
        "data_value_later_max_s": max(later),
        "trials_ok": result.trials_ok,
        "mode": staged.plan.mode,
        "reason": staged.plan.reason,
    }


# ---- the parent: samples PSS over the child's process tree --------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _tree(root: int) -> list[int]:
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        queue.extend(_children(pid))
    return pids


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/comm") as comm:
            name = comm.read().strip()
    except OSError:
        return "gone"
    return "jvm" if name == "java" else "workers"


def sampled(flag: str, case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Run a child, sampling its tree's PSS; its JSON result and the peak GiB per kind and in all."""
    here = Path(__file__).resolve()
    child = subprocess.Popen(
        [sys.executable, str(here), flag, json.dumps(case)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=here.parent,
    )
    peaks = {"driver": 0.0, "jvm": 0.0, "workers": 0.0, "host": 0.0}
    while child.poll() is None:
        totals = {"driver": 0, "jvm": 0, "workers": 0, "gone": 0}
        for pid in _tree(child.pid):
            totals[_kind(pid, child.pid)] += _pss_kib(pid)
        for kind in ("driver", "jvm", "workers"):
            peaks[kind] = max(peaks[kind], totals[kind] / 1024**2)
        peaks["host"] = max(peaks["host"], sum(totals.values()) / 1024**2)
        time.sleep(0.2)
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{flag} {case} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peaks


def _seconds(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f} s" if abs(high - low) < 0.005 else f"{low:.2f}-{high:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--parallelism", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--modes", nargs="+", default=["broadcast", "reload"])
    parser.add_argument("--max-evals", type=int, default=8)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from bench_dispatch import markdown

    rows = []
    with tempfile.TemporaryDirectory(prefix="sparktune-staging-scale-") as folder:
        for gib in args.gib:
            path = Path(folder) / f"features-{gib:g}GiB.parquet"
            write_dataset(path, gib)
            on_disk = path.stat().st_size
            floor, floor_peaks = sampled("--floor", {"uri": str(path)})
            in_memory = floor["in_memory_bytes"] / GIB
            rows.append(
                {
                    "data": f"{gib:g} GiB ({on_disk / GIB:.2f} GiB Parquet)",
                    "mode": "floor: one pyarrow read",
                    "P": "-",
                    "first result": f"{floor['read_s']:.1f} s",
                    "x read": "1.0",
                    "data.value, first per worker": "-",
                    "later": "-",
                    "driver": f"{floor_peaks['driver']:.2f}",
                    "JVM": "-",
                    "Python workers": "-",
                    "host": f"{floor_peaks['host']:.2f}",
                    "host / data": f"{floor_peaks['host'] / in_memory:.2f}",
                }
            )
            for mode in args.modes:
                # broadcast: a threshold above the size; reload: below it
                threshold = on_disk * 4 if mode == "broadcast" else 1
                for p in args.parallelism:
                    case = {"uri": str(path), "p": p, "n": args.max_evals, "threshold": threshold}
                    result, peaks = sampled("--run", case)
                    assert result["mode"] == mode and result["trials_ok"] == args.max_evals, result
                    rows.append(
                        {
                            "data": f"{gib:g} GiB",
                            "mode": mode,
                            "P": p,
                            "first result": f"{result['first_result_s']:.1f} s",
                            "x read": f"{result['first_result_s'] / floor['read_s']:.2f}",
                            "data.value, first per worker": _seconds(result["data_value_first_s"]),
                            "later": f"{result['data_value_later_max_s'] * 1000:.1f} ms",
                            "driver": f"{peaks['driver']:.2f}",
                            "JVM": f"{peaks['jvm']:.2f}",
                            "Python workers": f"{peaks['workers']:.2f}",
                            "host": f"{peaks['host']:.2f}",
                            "host / data": f"{peaks['host'] / in_memory:.2f}",
                        }
                    )
                    print(
                        f"{gib:g} GiB {mode} P={p}: session {result['session_s']:.1f} s; {result['reason']}"
                    )
    columns = list(rows[0])
    print("\nPeak PSS in GiB per process kind (cold: a fresh session per case, its first run)\n")
    print(markdown(rows, columns))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--floor", "--run"):
        child = floor_child if sys.argv[1] == "--floor" else run_child
        print(json.dumps(child(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
