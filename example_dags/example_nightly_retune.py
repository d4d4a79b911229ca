"""Nightly re-tuning: wait for the day's data, tune a gradient-boosting classifier, train the model, gate it.

1. ``export_features`` stands in for the upstream job: it writes the day's dataset (scikit-learn's
   breast cancer data, nothing is downloaded) as a partitioned Parquet directory and a ``_SUCCESS``
   marker. With a real upstream, delete this task and point ``data_root`` at where it writes.
2. ``wait_for_data`` (StagedDataSensor) waits for the marker and a stable size, then returns the
   staging plan: broadcast below 2 GiB, reload from storage above.
3. ``tune`` (HyperoptSparkOperator) runs the built-in estimator objective: no Python objective to
   write, each trial cross-validates the classifier with the trial's hyperparameters.
   Its asset, ``sparktune://tuning/example_nightly_retune.tune``, gets an event carrying the result:
   ``example_nightly_report`` (example_nightly_consumers.py) runs on it.
4. ``train_final_model`` fits the classifier on all the data with ``best_params`` and logs it to MLflow.
5. ``gate`` (ModelRegistryGateOperator) registers that model as a new version of
   ``example_nightly_retune.model`` and moves the ``champion`` alias to it only if its cross-validated
   ROC AUC beats the champion's by 0.002 (the first night promotes). A promotion emits an event on
   ``sparktune://model/example_nightly_retune.model/champion``: ``example_nightly_serving`` runs on it.

Without connections this runs Spark ``local[*]`` and a SQLite MLflow store under AIRFLOW_HOME
(``make demo-nightly``).
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_sparktune.operators.assets import model_asset, tuning_asset
from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from airflow_provider_sparktune.operators.registry_gate import ModelRegistryGateOperator
from airflow_provider_sparktune.sensors.staged_data import StagedDataSensor

DEFAULT_DATA_ROOT = os.path.join(os.environ.get("AIRFLOW_HOME", "/tmp"), "sparktune-example-data")
# The run's day: its logical date for scheduled runs, and the moment it was triggered for manual runs
# (which have no logical date in Airflow 3 unless one is given).
RUN_DAY = "{{ dag_run.run_after | ds }}"
DATASET_URI = "{{ params.data_root }}/breast_cancer/ds=" + RUN_DAY + "/"
ESTIMATOR = "sklearn.ensemble.GradientBoostingClassifier"
MODEL_NAME = "example_nightly_retune.model"  # the registered model (and the final models' experiment)
FIXED_PARAMS = {"random_state": 0}

SEARCH_SPACE = {
    "n_estimators": {"hp": "quniform", "low": 20, "high": 120, "q": 20},
    "learning_rate": {"hp": "loguniform", "low": 0.01, "high": 0.3},
    "max_depth": {"hp": "choice", "options": [2, 3, 4]},
    "subsample": {"hp": "uniform", "low": 0.6, "high": 1.0},
}


with DAG(
    dag_id="example_nightly_retune",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    # No `catchup=` here: Airflow's [scheduler] catchup_by_default decides (False unless configured).
    # A deployment that turns it on gets one scheduled run per day since start_date, one at a time
    # (max_active_runs=1), each night warm-starting from the one before; the deployment tests use that.
    max_active_runs=1,
    tags=["example", "sparktune"],
    params={"data_root": Param(DEFAULT_DATA_ROOT, type="string", description="where the datasets are")},
    doc_md=__doc__,
) as dag:

    @task
    def export_features(day: str, params: dict[str, Any] | None = None) -> str:
        """The upstream job's part: the day's features as Parquet part files, then the success marker."""
        from pathlib import Path

        from sklearn.datasets import load_breast_cancer

        frame = load_breast_cancer(as_frame=True).frame
        frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
        frame = frame.rename(columns={"target": "label"})
        folder = Path((params or {})["data_root"]) / "breast_cancer" / f"ds={day}"
        folder.mkdir(parents=True, exist_ok=True)
        half = len(frame) // 2
        frame.iloc[:half].to_parquet(folder / "part-00000.snappy.parquet", index=False)
        frame.iloc[half:].to_parquet(folder / "part-00001.snappy.parquet", index=False)
        (folder / "_SUCCESS").touch()  # written last: the dataset is complete
        return str(folder)

    # [START howto_sensor_staged_data]
    wait_for_data = StagedDataSensor(
        task_id="wait_for_data",
        uri=DATASET_URI,
        success_marker="_SUCCESS",
        # Waits in the triggerer: no worker slot is held while the data is late (it may be hours late).
        # Not mode="reschedule": under Airflow 3.3 a rescheduled sensor can be failed by the executor's
        # late success report for its previous poke (apache/airflow#71172), seen here with 5 s pokes.
        deferrable=True,
        poke_interval=10,  # seconds between checks in the triggerer; checking costs no worker slot
        timeout=6 * 60 * 60,
    )
    # [END howto_sensor_staged_data]

    # [START howto_operator_builtin_objective]
    tune = HyperoptSparkOperator(
        task_id="tune",
        search_space=SEARCH_SPACE,
        objective={
            "estimator": ESTIMATOR,
            "target": "label",
            "scoring": "roc_auc",
            "cv": 3,
            "fixed_params": FIXED_PARAMS,
        },
        data=wait_for_data.output,  # the plan; "{{ ti.xcom_pull(task_ids='wait_for_data') }}" works too
        max_evals=8,
        parallelism=2,
        seed=7,
        # One event per successful night, its extra = this task's XCom value; example_nightly_report
        # (example_nightly_consumers.py) is scheduled on it.
        outlets=[tuning_asset("example_nightly_retune.tune")],
    )
    # [END howto_operator_builtin_objective]

    @task
    def train_final_model(tuning: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        """Fit on all the data with the best hyperparameters and log the model to MLflow."""
        import warnings

        import mlflow
        from mlflow.models import infer_signature
        from sklearn.ensemble import GradientBoostingClassifier
        from sklearn.metrics import roc_auc_score

        from airflow_provider_sparktune.data.storage import read_dataset
        from airflow_provider_sparktune.hooks.mlflow import MlflowHook
        from airflow_provider_sparktune.tracking.tracker import local_artifact_root
        from airflow_provider_sparktune.tuning.estimator import cast_whole_floats, integer_parameters

        frame = read_dataset(plan["uri"], plan["format"])
        features, labels = frame.drop(columns=["label"]), frame["label"]
        params = cast_whole_floats(
            {**FIXED_PARAMS, **tuning["best_params"]}, integer_parameters(GradientBoostingClassifier)
        )
        model = GradientBoostingClassifier(**params).fit(features, labels)
        train_auc = float(roc_auc_score(labels, model.predict_proba(features)[:, 1]))

        hook = MlflowHook()
        uri = hook.get_tracking_uri()
        with hook.credentials():
            client = mlflow.MlflowClient(uri)
            experiment = client.get_experiment_by_name(MODEL_NAME)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(MODEL_NAME, artifact_location=local_artifact_root(uri))
            )
            mlflow.set_tracking_uri(uri)
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"final model {plan['uri']}") as run:
                mlflow.set_tags(
                    {"sparktune.tuning_run_id": tuning["mlflow"]["run_id"], "sparktune.data_uri": plan["uri"]}
                )
                mlflow.log_params(params)
                mlflow.log_metrics({"train_roc_auc": train_auc, "cv_roc_auc": -tuning["best_loss"]})
                with warnings.catch_warnings():
                    # skops looks the model's classes up in every loaded module, which touches each of
                    # Airflow's deprecated aliases: a thousand warnings in the task log, none about us.
                    warnings.filterwarnings("ignore", category=FutureWarning, module=r"skops\.")
                    mlflow.sklearn.log_model(
                        model,
                        name="model",
                        signature=infer_signature(features.head(), model.predict(features.head())),
                        pip_requirements=["scikit-learn"],
                        skops_trusted_types=[
                            "sklearn.tree._tree.Tree"
                        ],  # our own model: its trees are trusted
                    )
        print(f"final model: run {run.info.run_id}, cv roc_auc {-tuning['best_loss']:.4f}, params {params}")
        return {"run_id": run.info.run_id, "model_uri": f"runs:/{run.info.run_id}/model", "params": params}

    final_model = train_final_model(tune.output, wait_for_data.output)
    # [START howto_operator_registry_gate]
    gate = ModelRegistryGateOperator(
        task_id="gate",
        model_uri="{{ ti.xcom_pull(task_ids='train_final_model')['model_uri'] }}",
        registered_model_name=MODEL_NAME,
        metric="cv_roc_auc",  # logged by train_final_model; higher is better
        min_absolute_change=0.002,  # a champion is replaced for a real gain, not for noise
        tuning=tune.output,  # the version is tagged with the tuning run and the dataset
        # An event only when the champion moved: example_nightly_serving schedules on it.
        outlets=[model_asset(MODEL_NAME)],
    )
    # [END howto_operator_registry_gate]

    export_features(day=RUN_DAY) >> wait_for_data
    final_model >> gate
