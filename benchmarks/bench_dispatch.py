"""Trial dispatch benchmark: this engine against raw SparkTrials, serial Trials and MlflowSparkStudy.

Efficiency = ideal wall / actual wall, ideal = ceil(N / P) x t for N trials of t seconds at
parallelism P. Everything runs in this one process on Spark ``local[2]``, side by side and
interleaved, so the machine's noise hits every dispatcher alike; the ratio column compares each
against raw SparkTrials measured in the same run. The "Spark Connect" row runs the same engine over
a Spark Connect server started here from pyspark's own jars (``local[P]``, loopback, stopped at the
end), next to the classic session. All rows are warm: each session ran one small tuning first.

    make bench        # or: .venv/bin/python benchmarks/bench_dispatch.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

SPACE = {
    "a": {"hp": "uniform", "low": -2, "high": 2},
    "b": {"hp": "uniform", "low": -2, "high": 2},
    "c": {"hp": "loguniform", "low": 0.001, "high": 10},
    "d": {"hp": "choice", "options": [0, 1, 2, 3]},
}
RESULTS = Path(__file__).resolve().parent / "results"


def four_parameter_loss(params: dict[str, Any]) -> float:
    """Minimum 0 at a=0.5, b=-1, c=1, d=2."""
    return (
        (params["a"] - 0.5) ** 2
        + (params["b"] + 1) ** 2
        + math.log10(params["c"]) ** 2
        + (0.0 if params["d"] == 2 else 0.5)
    )


def sleeping_loss(params: dict[str, Any], t: float = 0.0, data: Any = None) -> float:
    time.sleep(t)
    return four_parameter_loss(params)


def optuna_objective(trial: Any, t: float) -> float:
    params = {
        "a": trial.suggest_float("a", -2, 2),
        "b": trial.suggest_float("b", -2, 2),
        "c": trial.suggest_float("c", 0.001, 10, log=True),
        "d": trial.suggest_categorical("d", [0, 1, 2, 3]),
    }
    return sleeping_loss(params, t)


def local_session(master: str, app_name: str, *, worker_daemon: bool = True) -> Any:
    """The benchmarks' SparkSession: loopback only, no UI, no progress bars, errors only in the log.

    ``worker_daemon``: PySpark's Python workers fork from this provider's daemon, as in the sessions
    the Spark hook makes; otherwise from PySpark's own.
    """
    from pyspark.sql import SparkSession

    from airflow_provider_sparktune.tuning.dispatch.daemon import DAEMON_MODULE, DAEMON_MODULE_CONF

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
    )
    if worker_daemon:
        builder = builder.config(DAEMON_MODULE_CONF, DAEMON_MODULE)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def start_connect_server(master: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Spark Connect server from pyspark's jars on a free loopback port; returns it and its URL."""
    import pyspark

    from airflow_provider_sparktune.tuning.dispatch.daemon import DAEMON_MODULE, DAEMON_MODULE_CONF

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = Path(pyspark.__file__).parent
    confs = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        DAEMON_MODULE_CONF: DAEMON_MODULE,
    }
    cmd = [
        str(home / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
    ]
    cmd += [
        "--master",
        master,
        *[a for k, v in confs.items() for a in ("--conf", f"{k}={v}")],
        "spark-internal",
    ]
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    with (work / "connect-server.log").open("wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return server, f"sc://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"the Spark Connect server did not come up; see {work / 'connect-server.log'}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(30)


# -- the dispatchers, each timed from the call to its last result -------------------------------


def run_engine(spark: Any, n: int, p: int, t: float, seed: int, on_trial: Any = None) -> tuple[float, float]:
    from airflow_provider_sparktune.tuning.session import run_tuning

    started = time.perf_counter()
    result = run_tuning(
        SPACE,
        sleeping_loss,
        spark=spark,
        objective_kwargs={"t": t},
        max_evals=n,
        parallelism=p,
        seed=seed,
        on_trial=on_trial,
    )
    return time.perf_counter() - started, result.best_loss


def _run_hyperopt_fmin(trials: Any, n: int, t: float, seed: int, **fmin_kwargs: Any) -> tuple[float, float]:
    """Plain hyperopt ``fmin`` on the given trials object, timed from the call to its return."""
    import numpy as np
    from hyperopt import fmin, tpe

    from airflow_provider_sparktune.tuning.space import build_space

    started = time.perf_counter()
    fmin(
        partial(sleeping_loss, t=t),
        build_space(SPACE),
        algo=tpe.suggest,
        max_evals=n,
        trials=trials,
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
        **fmin_kwargs,
    )
    return time.perf_counter() - started, min(trials.losses())


def run_raw_sparktrials(spark: Any, n: int, p: int, t: float, seed: int) -> tuple[float, float]:
    from hyperopt import SparkTrials

    return _run_hyperopt_fmin(SparkTrials(parallelism=p, spark_session=spark), n, t, seed, max_queue_len=p)


def run_serial_trials(spark: Any, n: int, p: int, t: float, seed: int) -> tuple[float, float]:
    from hyperopt import Trials

    return _run_hyperopt_fmin(Trials(), n, t, seed)


def run_mlflow_spark_study(spark: Any, n: int, p: int, t: float, seed: int) -> tuple[float, float]:
    import mlflow
    import optuna
    from mlflow.optuna.storage import MlflowStorage
    from mlflow.pyspark.optuna.study import MlflowSparkStudy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow.pyspark.optuna.study").setLevel(logging.WARNING)  # one line per trial
    store = tempfile.mkdtemp(prefix="bench-optuna-")
    uri = f"sqlite:///{store}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment(
        f"bench-{time.time_ns()}", artifact_location=Path(store).as_uri()
    )
    study = MlflowSparkStudy(
        f"bench-{time.time_ns()}",
        MlflowStorage(experiment_id=experiment_id),
        sampler=optuna.samplers.TPESampler(seed=seed),
        mlflow_tracking_uri=uri,
    )
    started = time.perf_counter()
    study.optimize(partial(optuna_objective, t=t), n_trials=n, n_jobs=p)
    return time.perf_counter() - started, float(study.best_value)


def dispatchers(connect: Any = None) -> dict[str, Callable[..., tuple[float, float]]]:
    found: dict[str, Callable[..., tuple[float, float]]] = {
        "sparktune (resident)": run_engine,
    }
    if connect is not None:
        found["sparktune (Spark Connect)"] = lambda spark, *args, **kwargs: run_engine(
            connect, *args, **kwargs
        )
    found |= {
        "raw SparkTrials": run_raw_sparktrials,
        "serial Trials (P=1)": run_serial_trials,
    }
    try:
        import optuna  # noqa: F401
    except ImportError:
        print("optuna is not installed: MlflowSparkStudy is left out (pip install '.[bench]')")
    else:
        found["MlflowSparkStudy"] = run_mlflow_spark_study
    return found


# -- the measurements ---------------------------------------------------------------------------


def dispatch_table(
    spark: Any,
    n: int,
    p: int,
    durations: list[float],
    repeats: int,
    only: list[str] | None = None,
    connect: Any = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    runners = {k: v for k, v in dispatchers(connect).items() if not only or k.split()[0] in only or k in only}
    for t in durations:
        walls: dict[str, list[float]] = {name: [] for name in runners}
        losses: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(repeats):  # interleaved: every dispatcher once per round
            for name, runner in runners.items():
                wall, best = runner(spark, n, p, t, seed=repeat)
                walls[name].append(wall)
                losses[name].append(best)
                print(f"  t={t:g}s round {repeat + 1}: {name:<22} {wall:7.2f} s", flush=True)
        raw = statistics.median(walls["raw SparkTrials"]) if "raw SparkTrials" in walls else None
        for name in runners:
            slots = 1 if name.startswith("serial") else p
            ideal = math.ceil(n / slots) * t
            wall = statistics.median(walls[name])
            rows.append(
                {
                    "dispatcher": name,
                    "t_s": t,
                    "n": n,
                    "p": slots,
                    "wall_s": round(wall, 2),
                    "ideal_s": round(ideal, 2),
                    "efficiency": round(ideal / wall, 3),
                    "speedup_vs_raw_sparktrials": round(raw / wall, 2) if raw else "-",
                    "best_loss": round(statistics.median(losses[name]), 4),
                }
            )
    return rows


def _log_trial(tracker: Any, record: Any, progress: Any) -> None:
    tracker.log_trial(record)


def logging_cost(spark: Any, n: int, p: int, t: float, repeats: int) -> dict[str, Any]:
    """The engine with every trial logged to a SQLite MLflow store, against no logging."""
    from airflow_provider_sparktune.tracking.tracker import TuningTracker

    on: list[float] = []
    off: list[float] = []
    for repeat in range(repeats):
        tracker = TuningTracker(f"sqlite:///{tempfile.mkdtemp(prefix='bench-mlflow-')}/mlflow.db", "bench")
        tracker.start(run_name="bench", tags={})  # the store's one-off schema set-up stays out of the timing
        order = [False, True] if repeat % 2 == 0 else [True, False]  # alternate who goes first
        for logged in order:
            callback = partial(_log_trial, tracker) if logged else None
            (on if logged else off).append(run_engine(spark, n, p, t, seed=repeat, on_trial=callback)[0])
    off_s, on_s = statistics.median(off), statistics.median(on)
    return {
        "t_s": t,
        "n": n,
        "p": p,
        "off_s": round(off_s, 2),
        "on_s": round(on_s, 2),
        "cost": round(on_s / off_s - 1, 3),
    }


def tpe_suggest_times(history_sizes: list[int]) -> list[dict[str, Any]]:
    """How long one ``tpe.suggest`` takes with this many finished trials in the history."""
    import numpy as np
    from hyperopt import Trials, base, rand, tpe

    from airflow_provider_sparktune.tuning.space import build_space

    domain = base.Domain(four_parameter_loss, build_space(SPACE))
    rng = np.random.default_rng(0)
    rows = []
    for size in history_sizes:
        trials = Trials()
        docs = rand.suggest(list(range(size)), domain, trials, 0)
        for doc in docs:
            doc["state"] = base.JOB_STATE_DONE
            doc["result"] = {"loss": float(rng.random()), "status": "ok"}
        trials.insert_trial_docs(docs)
        trials.refresh()
        timings = []
        for attempt in range(3):
            started = time.perf_counter()
            tpe.suggest([size + attempt], domain, trials, attempt)
            timings.append(time.perf_counter() - started)
        rows.append({"history": size, "suggest_s": round(statistics.median(timings), 4)})
    return rows


def search_quality(spark: Any, n: int, p: int, seeds: int) -> dict[str, Any]:
    engine = [run_engine(spark, n, p, 0.0, seed)[1] for seed in range(seeds)]
    raw = [run_raw_sparktrials(spark, n, p, 0.0, seed)[1] for seed in range(seeds)]
    return {
        "n": n,
        "p": p,
        "seeds": seeds,
        "engine_best_losses": [round(v, 4) for v in engine],
        "raw_best_losses": [round(v, 4) for v in raw],
        "engine_median": round(statistics.median(engine), 4),
        "raw_median": round(statistics.median(raw), 4),
    }


def connect_against_classic(table: list[dict[str, Any]]) -> str:
    """One line per trial length: the Spark Connect row's efficiency over the classic engine's."""
    by = {(row["dispatcher"], row["t_s"]): row["efficiency"] for row in table}
    lines = []
    for (name, t), efficiency in by.items():
        classic = by.get(("sparktune (resident)", t))
        if name == "sparktune (Spark Connect)" and classic:
            lines.append(
                f"t={t:g}s: Spark Connect efficiency {efficiency} vs classic {classic} -> {efficiency / classic:.2f}"
            )
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--durations", type=float, nargs="+", default=[0.5, 3.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quality-trials", type=int, default=40)
    parser.add_argument("--quality-seeds", type=int, default=5)
    parser.add_argument("--history", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--out", type=Path, default=RESULTS / "dispatch.json")
    parser.add_argument(
        "--only", nargs="+", help="first word of the dispatchers to run, e.g. sparktune raw (default: all)"
    )
    parser.add_argument("--skip-extras", action="store_true", help="only the dispatch table")
    parser.add_argument("--no-connect", action="store_true", help="leave out the Spark Connect row")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    spark = local_session(f"local[{args.parallelism}]", "sparktune-bench")
    run_engine(spark, 2, args.parallelism, 0.0, seed=0)  # warm the JVM once, for everyone alike
    n, p = args.trials, args.parallelism
    server, connect = None, None
    if not args.no_connect:
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        server, url = start_connect_server(f"local[{p}]", Path(tempfile.mkdtemp(prefix="bench-connect-")))
        connect = ConnectSession.builder.remote(url).create()
        run_engine(connect, 2, p, 0.0, seed=0)  # warm, as the classic session is

    print(f"dispatch: N={n} P={p} t={args.durations} repeats={args.repeats}")
    try:
        table = dispatch_table(spark, n, p, args.durations, args.repeats, args.only, connect)
    finally:
        if connect is not None:
            connect.stop()
        if server is not None:
            stop_server(server)
    print(connect_against_classic(table))
    print()
    print(
        markdown(
            table,
            [
                "dispatcher",
                "t_s",
                "wall_s",
                "ideal_s",
                "efficiency",
                "speedup_vs_raw_sparktrials",
                "best_loss",
            ],
        )
    )
    if args.skip_extras:
        spark.stop()
        return 0
    print("MLflow logging on vs off (SQLite store)")
    log_cost = logging_cost(spark, n, p, min(args.durations), args.repeats)
    print("tpe.suggest time by history size")
    suggest = tpe_suggest_times(args.history)
    print(f"search quality: {args.quality_seeds} seeds, N={args.quality_trials}, P={p}")
    quality = search_quality(spark, args.quality_trials, p, args.quality_seeds)
    spark.stop()

    print()
    print(
        markdown(
            table,
            [
                "dispatcher",
                "t_s",
                "wall_s",
                "ideal_s",
                "efficiency",
                "speedup_vs_raw_sparktrials",
                "best_loss",
            ],
        )
    )
    print()
    print(
        f"MLflow logging of every trial: {log_cost['on_s']} s on vs {log_cost['off_s']} s off -> cost {log_cost['cost']:+.1%}"
    )
    print(markdown(suggest, ["history", "suggest_s"]))
    print(
        f"search quality (median best loss over {quality['seeds']} seeds, N={quality['n']}, P={quality['p']}): "
        f"sparktune {quality['engine_median']} vs raw SparkTrials {quality['raw_median']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "dispatch": table,
                "mlflow_logging": log_cost,
                "tpe_suggest": suggest,
                "search_quality": quality,
            },
            indent=2,
        )
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
