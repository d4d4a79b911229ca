"""Print the latest tuning run of an experiment: its best parameters and how to open it in MLflow.

``python -m airflow_provider_sparktune.tracking.summary --tracking-uri URI --experiment NAME`` is what
``make demo`` ends with; it reads back what the operator logged, so it also shows the log is whole.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from airflow_provider_sparktune.tracking import schema
from airflow_provider_sparktune.tracking.store import embedded_tracking_uri, is_server_uri, open_client


def latest_parent_run(tracking_uri: str, experiment: str) -> Any:
    client = open_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    return next((r for r in runs if schema.PARENT_RUN not in r.data.tags), None)


def staging_line(params: dict[str, str]) -> str:
    """``broadcast of /data/features (166.0 KiB)`` from the parent run's staging params, or ""."""
    mode = params.get("staging_mode")
    if not mode or mode == "none":
        return ""
    from airflow_provider_sparktune.data.staging import format_bytes

    size = params.get("staging_size_bytes", "")
    shown = format_bytes(int(size)) if size.isdigit() else "size unknown"
    return f"{mode} of {params.get('staging_uri', '?')} ({shown})"


def lost_line(metrics: dict[str, float]) -> str:
    """``1 trial attempt lost with its Spark task and run again`` from the parent run's metrics, or ""
    when none was: a lost executor is the cluster's failure, shown apart from failed trials."""
    lost = int(metrics.get("trials_lost", 0))
    if lost <= 0:
        return ""
    return f"{lost} trial attempt{'s' if lost != 1 else ''} lost with {'their' if lost != 1 else 'its'} Spark task and run again"


def ui_command(tracking_uri: str) -> str:
    if is_server_uri(tracking_uri):
        return f"open {tracking_uri} in a browser"
    return f".venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=embedded_tracking_uri())
    parser.add_argument("--experiment", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    run = latest_parent_run(args.tracking_uri, args.experiment)
    if run is None:
        print(
            f"no finished tuning run in experiment {args.experiment!r} at {args.tracking_uri}",
            file=sys.stderr,
        )
        return 1
    path = open_client(args.tracking_uri).download_artifacts(run.info.run_id, "best_params.json")
    with open(path) as handle:
        best_params = json.load(handle)
    children = int(run.data.metrics.get("trials_total", 0))
    print()
    print(f"best params: {json.dumps(best_params)}")
    print(
        f"best loss:   {run.data.metrics.get('best_loss')}  ({children} trials, MLflow run {run.info.run_id})"
    )
    lost = lost_line(run.data.metrics)
    if lost:
        print(f"lost:        {lost}")
    staging = staging_line(run.data.params)
    if staging:
        print(f"data:        {staging}")
    print(f"MLflow UI:   {ui_command(args.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
