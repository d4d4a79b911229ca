"""Scale benchmark: driver CPU per trial and peak driver memory at 1k, 10k and 100k instant trials.

A nightly run of cheap trials can reach 100,000 trials. What the driver does once per trial (ask the
search algorithm, book the trial, send it, record the result, report it) must cost the same at the
100,000th trial as at the first: the goal is a per-trial CPU ratio 100k:1k of at most 1.5.

Each size runs in a fresh process (peak RSS is a high-water mark) on Spark ``local[2]`` with the
resident dispatcher and no MLflow: ``run_tuning`` without tracking, an objective that returns at
once. CPU is the driver's Python process only (user + system, ``getrusage(RUSAGE_SELF)``): the JVM
and the Python workers are other processes. The search algorithm is ``rand``: hyperopt's TPE reads
the whole history for every suggestion (the second table: one ``tpe.suggest`` by history size), so
with TPE the per-trial cost grows with the run whatever the provider does.

    .venv/bin/python benchmarks/trials_scale.py                    # 1k, 10k, 100k: about 5 minutes
    .venv/bin/python benchmarks/trials_scale.py --sizes 1000 10000 --tpe-history 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_dispatch import RESULTS, SPACE, local_session, markdown, tpe_suggest_times

GOAL_RATIO = 1.5
WARM_UP_TRIALS = 50  # the session's Python workers start and load the objective before the timer


def instant(params: dict[str, Any]) -> float:
    return float(params["a"] ** 2 + params["b"] ** 2)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def child(case: dict[str, Any]) -> dict[str, Any]:
    """One fresh process: a session, a warm-up run, then ``n`` instant trials timed."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from airflow_provider_sparktune.tuning.session import run_tuning

    spark = local_session(f"local[{case['p']}]", "sparktune-bench-scale")
    settings = {"parallelism": case["p"], "algo": case["algo"], "seed": 0}
    run_tuning(SPACE, instant, spark=spark, max_evals=WARM_UP_TRIALS, **settings)
    rss_before = _peak_rss_mb()
    cpu, wall = _cpu_s(), time.perf_counter()
    result = run_tuning(SPACE, instant, spark=spark, max_evals=case["n"], **settings)
    cpu, wall = _cpu_s() - cpu, time.perf_counter() - wall
    peak = _peak_rss_mb()
    spark.stop()
    return {
        "n": case["n"],
        "trials": result.trials_total,
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
    }


def measure(n: int, p: int, algo: str) -> dict[str, Any]:
    here = Path(__file__).resolve()
    case = {"n": n, "p": p, "algo": algo}
    out = subprocess.run(
        [sys.executable, str(here), "--child", json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
        cwd=here.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{n} trials failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def rows_of(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = runs[0]["cpu_s"] / runs[0]["n"]
    rows = []
    for run in runs:
        per_trial = run["cpu_s"] / run["n"]
        grown = max(0.0, run["peak_rss_mb"] - run["rss_before_mb"])
        rows.append(
            {
                "trials": f"{run['n']:,}",
                "driver CPU s": f"{run['cpu_s']:.1f}",
                "CPU ms / trial": f"{per_trial * 1000:.3f}",
                "ratio to first": f"{per_trial / base:.2f}",
                "wall s": f"{run['wall_s']:.1f}",
                "trials / s": f"{run['n'] / run['wall_s']:.0f}",
                "peak RSS MB": f"{run['peak_rss_mb']:.0f}",
                "RSS KB / trial": f"{grown * 1024 / run['n']:.2f}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--algo", default="rand")
    parser.add_argument("--tpe-history", type=int, nargs="*", default=[1000, 10_000, 100_000])
    parser.add_argument("--out", type=Path, default=RESULTS / "trials_scale.json")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    runs = []
    for n in args.sizes:
        print(f"{n} instant trials (algo={args.algo}, P={args.parallelism}) ...", flush=True)
        runs.append(measure(n, args.parallelism, args.algo))
    suggest = tpe_suggest_times(args.tpe_history) if args.tpe_history else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "tpe_suggest": suggest}, indent=2))

    rows = rows_of(runs)
    print()
    print(
        f"Driver cost of instant trials (resident dispatcher, local[{args.parallelism}], algo={args.algo}, no MLflow)"
    )
    print(markdown(rows, list(rows[0])))
    ratio = (runs[-1]["cpu_s"] / runs[-1]["n"]) / (runs[0]["cpu_s"] / runs[0]["n"])
    verdict = "met" if ratio <= GOAL_RATIO else "MISSED"
    print(
        f"\nper-trial CPU {runs[-1]['n']:,}:{runs[0]['n']:,} = {ratio:.2f} (goal <= {GOAL_RATIO}: {verdict})"
    )
    if suggest:
        print("\nOne tpe.suggest by history size (why the scaling row uses rand)")
        print(markdown(suggest, ["history", "suggest_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
