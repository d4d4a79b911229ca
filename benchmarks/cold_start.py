"""Cold-start benchmark: every measurement in a fresh process with a fresh SparkSession.

A tuning task always starts a new SparkSession, so what users get is the first run of a session:
the Python workers start, unpickle the objective and connect back before the first trial. Each case
runs in its own child process: the session is created and one trivial job starts PySpark's Python
daemon (both timed apart: ``daemon_s`` is paid once per session by whatever runs first), then
``run_tuning`` is timed from the call to its return twice in a row, "cold" (the session's first
tuning: no Python worker has the objective yet) and "warm" (the same call again). Raw hyperopt
``SparkTrials`` is measured the same way in its own fresh process, as the baseline of the same run.

Efficiency = ideal / wall, ideal = ceil(N / P) x t. "first result" is the time from the call to the
first trial result on the driver minus the trial's own time: the fixed cost before trials flow.
Driver-side imports (pyspark, hyperopt, this package) happen before the timer. The task-level part
runs ``TuningSession`` as the operator does: ``startup_s`` with the SparkSession made before or
beside the MLflow set-up, and ``drain_s`` of instant trials against a real ``mlflow server`` with
one writer or eight.

    .venv/bin/python benchmarks/cold_start.py     # all of it, about 15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_dispatch import RESULTS, SPACE, local_session, markdown, run_engine, run_raw_sparktrials

# (name, master, N, P, t): the goals of the cold-start work, on a 2-core machine
CASES: list[tuple[str, str, int, int, float]] = [
    ("first result", "local[2]", 2, 2, 0.0),
    ("0.5 s trials", "local[2]", 20, 2, 0.5),
    ("3 s trials", "local[2]", 8, 2, 3.0),
    ("1 s sleep, P=2", "local[16]", 8, 2, 1.0),
    ("1 s sleep, P=8", "local[16]", 32, 8, 1.0),
    ("1 s sleep, P=16", "local[16]", 64, 16, 1.0),
]
# the rows of each case: this provider (workers fork from its daemon, as in the hook's sessions), the
# same without that daemon (PySpark's own), and raw hyperopt SparkTrials on PySpark's daemon
SPARKTUNE, PYSPARK_DAEMON, RAW = "sparktune", "sparktune, PySpark's daemon", "raw SparkTrials"


def _time_sparktune(spark: Any, n: int, p: int, t: float, seed: int) -> dict[str, float]:
    first: list[float] = []
    started = time.perf_counter()
    wall, best = run_engine(
        spark,
        n,
        p,
        t,
        seed,
        on_trial=lambda record, progress: first or first.append(time.perf_counter() - started),
    )
    return {"wall_s": wall, "first_s": first[0], "best_loss": best}


def _time_sparktrials(spark: Any, n: int, p: int, t: float, seed: int) -> dict[str, float]:
    wall, best = run_raw_sparktrials(spark, n, p, t, seed)
    return {"wall_s": wall, "first_s": math.nan, "best_loss": best}  # its driver sees results only by polling


def child(case: dict[str, Any]) -> dict[str, Any]:
    """One fresh process: a new session, the cold run, then the same run again warm."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import hyperopt  # noqa: F401  (driver imports are not what this measures)

    import airflow_provider_sparktune.tuning.session  # noqa: F401

    started = time.perf_counter()
    spark = local_session(
        case["master"], "sparktune-bench-cold", worker_daemon=case["dispatcher"] == SPARKTUNE
    )
    session_s = time.perf_counter() - started
    started = time.perf_counter()  # the session's first Python job starts PySpark's Python daemon
    spark.sparkContext.parallelize([0], 1).map(lambda x: x).collect()
    daemon_s = time.perf_counter() - started
    runner = _time_sparktrials if case["dispatcher"] == RAW else _time_sparktune
    n, p, t = case["n"], case["p"], case["t"]
    cold = runner(spark, n, p, t, seed=case["seed"])
    warm = runner(spark, n, p, t, seed=case["seed"] + 1)
    spark.stop()
    return {"session_s": session_s, "daemon_s": daemon_s, "cold": cold, "warm": warm}


def _instant(params: dict[str, Any]) -> float:
    return float(params["a"] ** 2)


def task_child(case: dict[str, Any]) -> dict[str, Any]:
    """A fresh process as a task starts: MLflow parent run and SparkSession, then N instant trials.

    ``overlap``: the session is made by a call TuningSession runs beside its MLflow set-up (the
    operator's way); otherwise it is made first, then MLflow is set up (the order before).
    ``writers``: MLflow writer threads against a tracking server (1 = one after the other).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    started_at = time.time()
    from airflow_provider_sparktune.tracking import write_queue
    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TrackingOptions, TuningSession

    write_queue.SERVER_WRITERS = case["writers"]
    prepared = prepare_run(SPACE, _instant, max_evals=case["n"], parallelism=case["p"], seed=0)
    session = TuningSession(prepared, TrackingOptions(case["tracking_uri"], f"bench-{time.time_ns()}"))

    def make() -> Any:
        return local_session(case["master"], "sparktune-bench-cold")

    result = session.run(make if case["overlap"] else make(), started_at=started_at)
    _stop_active_session()
    return {"startup_s": result.startup_s, "drain_s": result.drain_s, "trials": result.trials_total}


def _stop_active_session() -> None:
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


SERVER_WORKERS = 4  # MLflow's default for ``mlflow server``


class TrackingServer:
    """``mlflow server`` as MLflow starts it (4 workers) on a free loopback port, stopped by process id.

    Its SQLite store is created the way docs/performance.md says to before a server opens it (WAL journal),
    and the job runner, which tracking does not use, is off.
    """

    def __init__(self, work: Path) -> None:
        import socket
        import urllib.request

        from airflow_provider_sparktune.tracking.store import prepare_store

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = f"sqlite:///{work / 'mlflow.db'}"
        prepare_store(store)
        mlflow = Path(sys.executable).with_name("mlflow")
        self.process = subprocess.Popen(
            [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port)]
            + [
                "--workers",
                str(SERVER_WORKERS),
                "--backend-store-uri",
                store,
                "--artifacts-destination",
                str(work),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        self.uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200:
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the MLflow tracking server did not start") from None
                time.sleep(0.5)

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def measure(name: str, master: str, n: int, p: int, t: float, dispatcher: str, seed: int) -> dict[str, Any]:
    case = {"master": master, "n": n, "p": p, "t": t, "dispatcher": dispatcher, "seed": seed}
    return _in_child(name, "--child", case)


def _in_child(name: str, flag: str, case: dict[str, Any]) -> dict[str, Any]:
    here = Path(__file__).resolve()
    out = subprocess.run(
        [sys.executable, str(here), flag, json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
        cwd=here.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def task_level(n: int, repeats: int) -> list[dict[str, Any]]:
    """Start-up (embedded SQLite store) and drain (tracking server), the new way against the old."""
    import tempfile

    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-cold-task-"))
    sqlite_uri = f"sqlite:///{work / 'embedded.db'}"
    base = {"master": "local[2]", "n": 20, "p": 2, "writers": 1, "tracking_uri": sqlite_uri}
    startup: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(repeats):
        for way, overlap in (("before", False), ("now", True)):
            out = _in_child("task start-up", "--task-child", {**base, "overlap": overlap})
            startup[way].append(out["startup_s"])
            print(f"  task start-up {way}: {out['startup_s']:.2f} s", flush=True)
    before = statistics.median(startup["before"])
    for way, label in (("before", "MLflow set-up, then Spark"), ("now", "side by side")):
        value = statistics.median(startup[way])
        rows.append(
            {
                "case": "first trial after task start (N=20)",
                "tracking": "embedded SQLite",
                "way": label,
                "startup_s": round(value, 2),
                "drain_s": "-",
                "ratio_vs_before": round(value / before, 2),
            }
        )
    server = TrackingServer(work / "server")
    try:
        drain: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(repeats):
            for way, writers in (("before", 1), ("now", 8)):
                case = {**base, "n": n, "writers": writers, "overlap": True, "tracking_uri": server.uri}
                out = _in_child("drain", "--task-child", case)
                drain[way].append(out["drain_s"])
                print(f"  drain of {n} trial runs, {writers} writer(s): {out['drain_s']:.2f} s", flush=True)
    finally:
        server.stop()
    before = statistics.median(drain["before"])
    for way, label in (("before", "1 writer"), ("now", "8 writers")):
        value = statistics.median(drain[way])
        rows.append(
            {
                "case": f"MLflow drain after the last of {n} instant trials",
                "tracking": f"mlflow server, {SERVER_WORKERS} workers, SQLite",
                "way": label,
                "startup_s": "-",
                "drain_s": round(value, 2),
                "ratio_vs_before": round(value / before, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--task-child", help=argparse.SUPPRESS)
    parser.add_argument("--task-trials", type=int, default=400)
    parser.add_argument(
        "--skip-task", action="store_true", help="leave out the task-level start-up and drain"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cases", nargs="+", help="names of the cases to run (default: all)")
    parser.add_argument("--no-baseline", action="store_true", help="leave raw SparkTrials out")
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_start.json")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.task_child:
        print(json.dumps(task_child(json.loads(args.task_child))))
        return 0

    rows: list[dict[str, Any]] = []
    dispatchers = [SPARKTUNE, PYSPARK_DAEMON] + ([] if args.no_baseline else [RAW])
    for name, master, n, p, t in CASES:
        if args.cases and name not in args.cases:
            continue
        ideal = math.ceil(n / p) * t
        runs: dict[str, list[dict[str, Any]]] = {d: [] for d in dispatchers}
        for repeat in range(args.repeats):
            for dispatcher in dispatchers:  # interleaved, so the machine's noise hits both alike
                runs[dispatcher].append(measure(name, master, n, p, t, dispatcher, seed=repeat))
                cold = runs[dispatcher][-1]["cold"]
                print(f"  {name} {dispatcher}: cold {cold['wall_s']:.2f} s", flush=True)
        base = statistics.median(r["cold"]["wall_s"] for r in runs[RAW]) if RAW in runs else math.nan
        for dispatcher in dispatchers:
            cold_wall = statistics.median(r["cold"]["wall_s"] for r in runs[dispatcher])
            warm_wall = statistics.median(r["warm"]["wall_s"] for r in runs[dispatcher])
            rows.append(
                {
                    "case": name,
                    "dispatcher": dispatcher,
                    "master": master,
                    "n": n,
                    "p": p,
                    "t_s": t,
                    "session_s": round(statistics.median(r["session_s"] for r in runs[dispatcher]), 2),
                    "daemon_s": round(statistics.median(r["daemon_s"] for r in runs[dispatcher]), 2),
                    "cold_first_result_s": round(
                        statistics.median(r["cold"]["first_s"] for r in runs[dispatcher]) - t, 2
                    ),
                    "cold_wall_s": round(cold_wall, 2),
                    "warm_wall_s": round(warm_wall, 2),
                    "cold_efficiency": round(ideal / cold_wall, 2) if ideal else "-",
                    "warm_efficiency": round(ideal / warm_wall, 2) if ideal else "-",
                    "cold_speedup_vs_raw": round(base / cold_wall, 2) if RAW in runs else "-",
                }
            )
    columns = [
        "case",
        "dispatcher",
        "daemon_s",
        "cold_first_result_s",
        "cold_wall_s",
        "cold_efficiency",
        "warm_wall_s",
        "warm_efficiency",
        "cold_speedup_vs_raw",
    ]
    print()
    print(markdown(rows, columns))
    task_rows = [] if args.skip_task else task_level(args.task_trials, args.repeats)
    if task_rows:
        print()
        print(markdown(task_rows, ["case", "tracking", "way", "startup_s", "drain_s", "ratio_vs_before"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dispatch": rows, "task": task_rows}, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
