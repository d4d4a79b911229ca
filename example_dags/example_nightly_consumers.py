"""The consumer side of the nightly loop: a DAG that runs when ``example_nightly_retune`` has new parameters.

``example_nightly_report`` is scheduled on the tuning asset, ``sparktune://tuning/example_nightly_retune.tune``:
each successful tuning night emits one event whose ``extra`` is the tuning task's XCom value (best
params, best loss, trial counts, the MLflow run, the staging plan, ``improved`` against the earlier
nights). The run it starts reads that event from ``triggering_asset_events``; started by hand, it reads
the asset's newest event through ``inlet_events``. No clock guessed to be "after tuning".
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_sparktune.operators.assets import tuning_asset

TUNED = tuning_asset("example_nightly_retune.tune")  # the producer's tuning key: "<dag_id>.<task_id>"


with DAG(
    dag_id="example_nightly_report",
    schedule=[TUNED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=["example", "sparktune"],
    doc_md=__doc__,
) as report_dag:

    @task(inlets=[TUNED])
    def read_tuning_event(**context: Any) -> dict[str, Any]:
        """The night's result as the event carried it: what a retrain or scoring task starts from."""
        from airflow_provider_sparktune.operators.assets import latest_event

        tuning = latest_event(context, TUNED)
        verdict = "improved on" if tuning["improved"] else "did not beat"
        print(
            f"tuning run {tuning['event']['source_run_id']}: best loss {tuning['best_loss']} {verdict} "
            f"{tuning['previous_best_loss']}; params {tuning['best_params']}; "
            f"MLflow run {tuning['mlflow']['run_id']}"
        )
        return {
            "source_run_id": tuning["event"]["source_run_id"],
            "triggered": tuning["event"]["triggered"],
            "best_params": tuning["best_params"],
            "best_loss": tuning["best_loss"],
            "improved": tuning["improved"],
            "mlflow_run_id": tuning["mlflow"]["run_id"],
            "data_uri": (tuning["staging"] or {}).get("uri"),
        }

    read_tuning_event()
