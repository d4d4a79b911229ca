"""Parallel search quality of every searcher: what P trials at once cost, on three problems.

A searcher proposes a point from the finished trials (and, for Optuna's samplers, the running ones
too); with P running at once each proposal misses the results of up to P - 1 trials. This simulates
an asynchronous run exactly (instant objectives, trials finishing in the order they started, a new
one asked as each finishes) without Spark, through the same code path a run takes: ``prepare_run``
builds the searcher behind ``algo`` and its ``suggest`` writes the run's hyperopt trial documents.
P = 1 is the searcher's own serial run, the reference of its ratios. Reported per searcher, problem
and P: the best loss after N trials (median and IQR over seeds), its regret (best - optimum)
relative to the same searcher at P = 1, and the driver's sampling time per trial.

Problems: Branin (2-d), Hartmann-6 (6-d), and a conditional space: a nested choice whose live
branch is Branin and whose dead branch is a flat loss of 20 + z (never the optimum).

    .venv/bin/python benchmarks/search_quality.py --trials 80 --seeds 60 --parallelism 1 4 8 16
    .venv/bin/python benchmarks/search_quality.py --gp-cost 200 1000   # GPSampler's time per ask
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_dispatch import RESULTS, markdown  # the benchmarks folder is on sys.path when run as a script

HARTMANN_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
HARTMANN_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
HARTMANN_ALPHA = [1.0, 1.2, 3.0, 3.2]


def branin(params: dict[str, float]) -> float:
    x1, x2 = params["x1"], params["x2"]
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def hartmann6(params: dict[str, float]) -> float:
    x = [params[f"x{i}"] for i in range(6)]
    return -sum(
        alpha * math.exp(-sum(a * (xi - p) ** 2 for a, xi, p in zip(row, x, prow, strict=True)))
        for alpha, row, prow in zip(HARTMANN_ALPHA, HARTMANN_A, HARTMANN_P, strict=True)
    )


def conditional(params: dict[str, Any]) -> float:
    """A nested choice with a dead branch: the live branch is Branin, the dead one never wins."""
    branch = params["branch"]
    if branch["kind"] == "dead":
        return 20.0 + branch["z"]
    return branin(branch)


def uniform(low: float, high: float) -> dict[str, Any]:
    return {"hp": "uniform", "low": low, "high": high}


def problems() -> dict[str, tuple[Callable[[dict[str, Any]], float], dict[str, Any], float]]:
    """name -> (function, declarative space, known minimum)."""
    return {
        "branin": (branin, {"x1": uniform(-5, 10), "x2": uniform(0, 15)}, 0.397887),
        "hartmann6": (hartmann6, {f"x{i}": uniform(0, 1) for i in range(6)}, -3.32237),
        "conditional": (
            conditional,
            {
                "branch": {
                    "hp": "choice",
                    "options": [
                        {"kind": "live", "x1": uniform(-5, 10), "x2": uniform(0, 15)},
                        {"kind": "dead", "z": uniform(0, 1)},
                    ],
                }
            },
            0.397887,
        ),
    }


def available_searchers() -> list[str]:
    """Every searcher whose packages are installed here (``atpe`` needs lightgbm, ``optuna.gp`` torch)."""
    import importlib.util

    from airflow_provider_sparktune.search.names import SEARCHERS

    missing = {"atpe": "lightgbm", "optuna.gp": "torch", "optuna.cmaes": "cmaes"}
    return [s for s in SEARCHERS if s not in missing or importlib.util.find_spec(missing[s]) is not None]


def asynchronous_run(
    problem: str, algo: str, n: int, p: int, seed: int, options: dict[str, Any] | None = None
) -> tuple[float, float]:
    """(best loss of ``n`` trials with ``p`` always running, driver seconds spent asking per trial).

    The oldest running trial finishes next; a new one is asked the moment it does.
    """
    import numpy as np
    from hyperopt import Trials, base

    from airflow_provider_sparktune.tuning.prepare import prepare_run

    fn, declared, _ = problems()[problem]
    prepared = prepare_run(
        declared, fn, algo=algo, algo_options=options, seed=seed, max_evals=n, parallelism=p
    )
    trials = Trials()
    domain = base.Domain(fn, prepared.space)
    rng = np.random.default_rng(seed)
    running: deque[dict[str, Any]] = deque()
    asking = 0.0

    def start_one() -> None:
        nonlocal asking
        new_ids = trials.new_trial_ids(1)
        trials.refresh()
        started = time.perf_counter()
        docs = prepared.suggest(new_ids, domain, trials, int(rng.integers(2**31 - 1)))
        asking += time.perf_counter() - started
        trials.insert_trial_docs(docs)
        trials.refresh()
        doc = next(t for t in trials._dynamic_trials if t["tid"] == new_ids[0])
        doc["state"] = base.JOB_STATE_RUNNING
        running.append(doc)

    started = 0
    while started < min(p, n):
        start_one()
        started += 1
    while running:
        doc = running.popleft()
        doc["result"] = domain.evaluate(base.spec_from_misc(doc["misc"]), ctrl=None)
        doc["state"] = base.JOB_STATE_DONE
        trials.refresh()
        if started < n:
            start_one()
            started += 1
    return min(float(t["result"]["loss"]) for t in trials.trials), asking / n


def _run(args: tuple[str, str, int, int, int, dict[str, Any] | None]) -> tuple[float, float]:
    logging.getLogger("hyperopt").setLevel(logging.WARNING)
    return asynchronous_run(*args)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def study(
    n: int,
    seeds: int,
    parallelisms: list[int],
    searchers: list[str],
    workers: int,
    seeds_for: dict[str, int],
    options: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    from multiprocessing import get_context

    rows: list[dict[str, Any]] = []
    with get_context("spawn").Pool(workers) as pool:
        for name, (_, _, optimum) in problems().items():
            for algo in searchers:
                serial_regret: float | None = None
                k = seeds_for.get(algo, seeds)
                for p in parallelisms:
                    started = time.perf_counter()
                    given = (options or {}).get(algo)
                    runs = pool.map(_run, [(name, algo, n, p, seed, given) for seed in range(k)])
                    best = [b for b, _ in runs]
                    q1, median, q3 = quartiles(best)
                    regret = median - optimum
                    if serial_regret is None:
                        serial_regret = regret
                    rows.append(
                        {
                            "problem": name,
                            "searcher": algo + (f" {json.dumps(given)}" if given else ""),
                            "P": p,
                            "seeds": k,
                            "median best": round(median, 4),
                            "IQR": f"{q1:.4f} - {q3:.4f}",
                            "median regret": round(regret, 4),
                            "regret vs P=1": round(regret / serial_regret, 2)
                            if serial_regret > 0
                            else math.nan,
                            "ask ms/trial": round(1000 * statistics.median(a for _, a in runs), 2),
                            "seconds": round(time.perf_counter() - started, 1),
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


AT_OPTIMUM = 1e-3  # median regret this small at P = 8 and 16: the searcher found the minimum


def verdict(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per problem: the searcher with the lowest median regret at P = 8, and whether it holds the goal
    (median regret at P = 8 <= 1.05x its serial regret, at P = 16 <= 1.15x)."""
    out: list[dict[str, Any]] = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        mine = [r for r in rows if r["problem"] == problem]
        at = {(r["searcher"], r["P"]): r for r in mine}
        ranked = sorted(
            {r["searcher"] for r in mine},
            key=lambda s: at[(s, 8)]["median regret"] if (s, 8) in at else math.inf,
        )
        for algo in ranked:
            p8, p16 = at.get((algo, 8)), at.get((algo, 16))
            holds = (
                p8 is not None
                and p16 is not None
                and p8["regret vs P=1"] <= 1.05
                and p16["regret vs P=1"] <= 1.15
            )
            # a ratio of two regrets at the optimum is noise: say when both are within AT_OPTIMUM
            at_optimum = (
                p8 is not None
                and p16 is not None
                and max(p8["median regret"], p16["median regret"]) <= AT_OPTIMUM
            )
            out.append(
                {
                    "problem": problem,
                    "searcher": algo,
                    "regret P=1": at[(algo, 1)]["median regret"] if (algo, 1) in at else None,
                    "regret P=8": p8["median regret"] if p8 else None,
                    "P=8 vs P=1": p8["regret vs P=1"] if p8 else None,
                    "regret P=16": p16["median regret"] if p16 else None,
                    "P=16 vs P=1": p16["regret vs P=1"] if p16 else None,
                    "goal holds": "yes" if holds else ("at optimum" if at_optimum else "no"),
                    "ask ms/trial (P=8)": p8["ask ms/trial"] if p8 else None,
                }
            )
    return out


def gp_cost(sizes: list[int], asks: int = 2) -> list[dict[str, Any]]:
    """GPSampler's driver time for one ask after ``size`` finished trials (Hartmann-6, random points)."""
    import numpy as np
    import optuna

    from airflow_provider_sparktune.search.names import OPTUNA_SAMPLERS  # noqa: F401  (the name exists)
    from airflow_provider_sparktune.search.optuna_searcher import make_sampler
    from airflow_provider_sparktune.search.optuna_space import OptunaSpace
    from airflow_provider_sparktune.tuning.space import build_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = OptunaSpace(build_space(problems()["hartmann6"][1]))
    rows = []
    for size in sizes:
        rng = np.random.default_rng(size)
        study = optuna.create_study(sampler=make_sampler("optuna.gp", {}, 0))
        for _ in range(size):
            vals = {f"x{i}": float(rng.uniform()) for i in range(6)}
            study.add_trial(
                optuna.trial.create_trial(
                    params=vals, distributions=space.active(vals), value=hartmann6(vals)
                )
            )
        times = []
        for _ in range(asks):
            started = time.perf_counter()
            trial = study.ask()
            vals = space.sample(trial)
            times.append(time.perf_counter() - started)
            study.tell(trial, hartmann6(vals))
        rows.append(
            {"finished trials": size, "asks": asks, "median s/ask": round(statistics.median(times), 3)}
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=80)
    parser.add_argument("--seeds", type=int, default=60)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--searchers", nargs="+", default=None, help="default: every installed searcher")
    parser.add_argument(
        "--gp-seeds", type=int, default=4, help="seeds for optuna.gp (each ask refits a GP: slow)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gp-cost", type=int, nargs="*", default=[200, 1000])
    parser.add_argument("--out", type=Path, default=RESULTS / "search_quality.json")
    parser.add_argument(
        "--algo-options",
        type=json.loads,
        default={},
        help='options per searcher, e.g. \'{"optuna.tpe": {"constant_liar": false}}\'',
    )
    parser.add_argument("--report", type=Path, help="print the tables of a saved result, run nothing")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        print_tables(saved["rows"], verdict(saved["rows"]), saved.get("gp_cost", []), saved)
        return 0
    logging.getLogger("hyperopt").setLevel(logging.WARNING)
    searchers = args.searchers or available_searchers()
    started = time.perf_counter()
    rows = study(
        args.trials,
        args.seeds,
        args.parallelism,
        searchers,
        args.workers,
        {"optuna.gp": args.gp_seeds},
        args.algo_options,
    )
    verdicts = verdict(rows)
    costs = gp_cost(args.gp_cost) if args.gp_cost and "optuna.gp" in available_searchers() else []
    seconds = round(time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "trials": args.trials,
                "seeds": args.seeds,
                "seconds": seconds,
                "rows": rows,
                "verdict": verdicts,
                "gp_cost": costs,
            },
            indent=2,
        )
    )
    print_tables(rows, verdicts, costs, {"trials": args.trials, "seeds": args.seeds, "seconds": seconds})
    return 0


def print_tables(
    rows: list[dict[str, Any]],
    verdicts: list[dict[str, Any]],
    costs: list[dict[str, Any]],
    run: dict[str, Any],
) -> None:
    print(
        f"\nSearch quality: best loss after N={run['trials']} trials, {run['seeds']} seeds ({run['seconds']} s)\n"
    )
    print(markdown(rows, list(rows[0])))
    print("\nWhich searcher when (ranked by median regret at P=8)\n")
    print(markdown(verdicts, list(verdicts[0])))
    if costs:
        print("\noptuna.gp: driver time per ask after N finished trials\n")
        print(markdown(costs, list(costs[0])))


if __name__ == "__main__":
    sys.exit(main())
