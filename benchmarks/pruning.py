"""Pruning benchmark: objective time and best loss with no pruner, median and successive halving.

An iterative objective with a real learning curve: ``SGDClassifier`` trained epoch by epoch with
``partial_fit`` on a synthetic 50k-row classification set, reporting the validation log-loss after
each epoch. Same space, ``max_evals``, parallelism and seeds for every pruner, on Spark ``local[2]``
in this one process (a fresh session per run would measure start-up, not pruning). Reported: the
total time spent inside objectives (the cluster time pruning saves) and the best loss, median over
seeds, each as a ratio to no pruning measured in the same run.

    .venv/bin/python benchmarks/pruning.py --seeds 5 --max-evals 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_dispatch import (  # the benchmarks folder is on sys.path when run as a script
    RESULTS,
    local_session,
    markdown,
)

EPOCHS = 30
SPACE = {
    "alpha": {"hp": "loguniform", "low": 1e-7, "high": 1e-1},
    "eta0": {"hp": "loguniform", "low": 1e-5, "high": 1.0},
    "learning_rate": {"hp": "choice", "options": ["constant", "invscaling", "adaptive"]},
}
PRUNERS: dict[str, Any] = {
    "none": None,
    "median": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
    "successive_halving": {"name": "successive_halving", "min_resource": 2, "reduction_factor": 3},
}


def dataset(rows: int = 50_000, seed: int = 0) -> dict[str, Any]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(
        n_samples=rows, n_features=40, n_informative=12, flip_y=0.05, class_sep=0.8, random_state=seed
    )
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    return {
        "X_train": scaler.transform(X_train),
        "y_train": y_train,
        "X_val": scaler.transform(X_val),
        "y_val": y_val,
    }


def sgd_epochs(params: dict[str, Any], data: Any = None, trial: Any = None) -> float:
    """Validation log-loss after each epoch of SGD; the loss of the last epoch is the result."""
    import numpy as np
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import log_loss

    from airflow_provider_sparktune import TrialPruned

    arrays = data.value if hasattr(data, "value") else data
    model = SGDClassifier(loss="log_loss", random_state=0, **params)
    classes = np.array([0, 1])
    loss = float("inf")
    for epoch in range(EPOCHS):
        model.partial_fit(arrays["X_train"], arrays["y_train"], classes=classes)
        proba = np.clip(model.predict_proba(arrays["X_val"]), 1e-7, 1 - 1e-7)
        loss = float(log_loss(arrays["y_val"], proba))
        trial.report(loss, epoch)
        if trial.should_prune():
            raise TrialPruned()
    return loss


def measure(
    spark: Any, data: dict[str, Any], pruner: Any, max_evals: int, p: int, seed: int
) -> dict[str, Any]:
    from airflow_provider_sparktune import run_tuning

    started = time.perf_counter()
    result = run_tuning(
        SPACE,
        sgd_epochs,
        spark=spark,
        data=data,
        max_evals=max_evals,
        parallelism=p,
        seed=seed,
        pruner=pruner,
    )
    return {
        "objective_s": sum(r.eval_s or 0.0 for r in result.records),
        "wall_s": time.perf_counter() - started,
        "best_loss": result.best_loss,
        "pruned": result.trials_pruned,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-evals", type=int, default=30)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "pruning.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = local_session("local[2]", "sparktune-bench-pruning")
    data = dataset()
    measure(spark, data, None, 2, args.parallelism, 0)  # warm the Python workers; not reported
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PRUNERS}
    for seed in range(args.seeds):
        for name, pruner in PRUNERS.items():  # interleaved: the machine's noise hits each alike
            runs[name].append(measure(spark, data, pruner, args.max_evals, args.parallelism, seed))
            print(name, seed, json.dumps(runs[name][-1]), file=sys.stderr, flush=True)
    base_time = statistics.median(r["objective_s"] for r in runs["none"])
    base_loss = statistics.median(r["best_loss"] for r in runs["none"])
    rows = []
    for name, measured in runs.items():
        objective_s = statistics.median(r["objective_s"] for r in measured)
        best = statistics.median(r["best_loss"] for r in measured)
        rows.append(
            {
                "pruner": name,
                "objective s (median)": round(objective_s, 1),
                "vs none": round(objective_s / base_time, 2),
                "best loss (median)": round(best, 4),
                "best loss vs none": f"{(best / base_loss - 1) * 100:+.1f} %",
                "pruned trials (median)": statistics.median(r["pruned"] for r in measured),
                "wall s (median)": round(statistics.median(r["wall_s"] for r in measured), 1),
            }
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": runs, "rows": rows}, indent=2)
    )
    columns = list(rows[0])
    print(
        f"\nPruning: SGDClassifier, {EPOCHS} epochs, 50k rows; max_evals={args.max_evals}, "
        f"P={args.parallelism}, {args.seeds} seeds, warm local[2]\n"
    )
    print(markdown(rows, columns))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
