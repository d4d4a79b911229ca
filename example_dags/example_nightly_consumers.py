"""The consumer side of the nightly loop: DAGs that run when ``example_nightly_retune`` has news, not on a clock.

``example_nightly_report`` is scheduled on the tuning asset, ``sparktune://tuning/example_nightly_retune.tune``:
each successful tuning night emits one event whose ``extra`` is the tuning task's XCom value (best
params, best loss, trial counts, the MLflow run, the staging plan, ``improved`` against the earlier
nights). The run it starts reads that event from ``triggering_asset_events``; started by hand, it reads
the asset's newest event through ``inlet_events``. No clock guessed to be "after tuning".

``example_nightly_serving`` is scheduled on ``sparktune://model/example_nightly_retune.model/champion``:
the registry gate emits it only when a night's model replaced the champion. It loads exactly the
version that was promoted and scores the dataset it was trained on (a batch-scoring stand-in).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_sparktune.operators.assets import model_asset, tuning_asset

TUNED = tuning_asset("example_nightly_retune.tune")  # the producer's tuning key: "<dag_id>.<task_id>"
CHAMPION = model_asset("example_nightly_retune.model")  # the gate's registered model, alias champion


with DAG(
    dag_id="example_nightly_report",
    schedule=[TUNED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=["example", "sparktune"],
    doc_md=__doc__,
) as report_dag:
    # [START howto_asset_consumer]
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
    # [END howto_asset_consumer]


with DAG(
    dag_id="example_nightly_serving",
    schedule=[CHAMPION],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    tags=["example", "sparktune"],
    doc_md=__doc__,
) as serving_dag:

    @task(inlets=[CHAMPION])
    def score_batch(**context: Any) -> dict[str, Any]:
        """Load the version the gate promoted and score a batch with it."""
        import mlflow

        from airflow_provider_sparktune.data.storage import read_dataset
        from airflow_provider_sparktune.hooks.mlflow import MlflowHook
        from airflow_provider_sparktune.operators.assets import latest_event

        promoted = latest_event(context, CHAMPION)
        hook = MlflowHook()
        with hook.credentials():
            mlflow.set_tracking_uri(hook.get_tracking_uri())
            model = mlflow.sklearn.load_model(promoted["model_uri"])  # models:/<name>/<version>
        frame = read_dataset(promoted["sparktune.data_uri"], "parquet")
        predicted = model.predict(frame.drop(columns=["label"]))
        print(
            f"scored {len(predicted)} rows with {promoted['model_uri']} "
            f"({promoted['metric']} {promoted['value']:.4f}): {promoted['reason']}"
        )
        return {
            "source_run_id": promoted["event"]["source_run_id"],
            "model_uri": promoted["model_uri"],
            "version": promoted["version"],
            "rows": len(predicted),
            "positive_share": round(float(predicted.mean()), 4),
        }

    score_batch()
