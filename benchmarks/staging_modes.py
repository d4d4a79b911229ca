"""Broadcast vs reload on a local Spark session: wall time, per-trial time and storage reads.

    .venv/bin/python benchmarks/staging_modes.py --rows 2000000 --max-evals 8 --parallelism 2

Writes a Parquet dataset of ``rows`` x 6 float columns, then tunes the same objective (which
touches every row of ``data.value``) three times: with the DataFrame passed as plain data (pickled
into every trial, the seed's anti-pattern), broadcast, and reloaded (threshold forced below the
size). Numbers depend on the machine; run it on an idle one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def objective(params: dict[str, Any], data: Any = None) -> dict[str, Any]:
    import pandas  # noqa: F401  # imported before the clock starts: measure the data, not the import
    import pyarrow  # noqa: F401

    started = time.perf_counter()
    frame = data.value if hasattr(data, "value") else data  # closure mode: the DataFrame itself
    got = time.perf_counter() - started
    return {"loss": float((params["a"] - frame["c0"].mean()) ** 2), "metrics": {"data_value_s": got}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--max-evals", type=int, default=8)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    from pyspark.sql import SparkSession

    from airflow_provider_sparktune.data.cache import read_count
    from airflow_provider_sparktune.data.staging import StagedData, format_bytes, plan_dataset
    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.run import execute_run

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    folder = Path(tempfile.mkdtemp(prefix="sparktune-bench-"))
    path = folder / "features.parquet"
    rng = np.random.default_rng(0)
    pd.DataFrame({f"c{i}": rng.normal(size=args.rows) for i in range(6)}).to_parquet(path)
    spark = (
        SparkSession.builder.master(args.master)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    size = path.stat().st_size
    print(f"dataset: {args.rows} rows, {format_bytes(size)} of Parquet at {path}")
    for mode, threshold in (("closure", 0), ("broadcast", 2 * 1024**3), ("reload", 1)):
        data: Any = (
            pd.read_parquet(path)  # the seed's anti-pattern: the data pickled into every trial
            if mode == "closure"
            else StagedData.open(plan_dataset(str(path), threshold_bytes=threshold))
        )
        prepared = prepare_run(
            {"a": {"hp": "uniform", "low": -1, "high": 1}},
            objective,
            data=data,
            max_evals=args.max_evals,
            parallelism=args.parallelism,
            seed=1,
        )
        started = time.perf_counter()
        staged_at: list[float] = []
        result = execute_run(
            prepared, spark, on_start=lambda *_, at=staged_at: at.append(time.perf_counter())
        )
        total = time.perf_counter() - started
        durations = [r.duration_s for r in result.records if r.duration_s is not None]
        value_s = [r.metrics["data_value_s"] for r in result.records]
        print(
            f"{mode:9s} total {total:6.1f} s | staging on the driver {staged_at[0] - started:5.2f} s | "
            f"trial mean {statistics.mean(durations):5.2f} s | data.value mean {statistics.mean(value_s):5.2f} s "
            f"(first {value_s[0]:.2f} s, max {max(value_s):.2f} s) | storage reads {read_count(str(path))}"
        )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
