"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_sparktune import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-sparktune",
        "name": "Sparktune",
        "description": "Scheduled hyperparameter tuning with hyperopt SparkTrials, tracked in MLflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Sparktune",
                "external-doc-url": "https://github.com/hyperopt/hyperopt",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Sparktune",
                "python-modules": ["airflow_provider_sparktune.operators.hyperopt_spark"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Sparktune",
                "python-modules": [
                    "airflow_provider_sparktune.hooks.spark_session",
                    "airflow_provider_sparktune.hooks.mlflow",
                    "airflow_provider_sparktune.hooks.staging",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Sparktune",
                "python-modules": ["airflow_provider_sparktune.sensors.staged_data"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Sparktune",
                "python-modules": ["airflow_provider_sparktune.triggers.staged_data"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_sparktune.hooks.mlflow.MlflowHook",
                "connection-type": "mlflow",
            },
            {
                "hook-class-name": "airflow_provider_sparktune.hooks.staging.DataStagingHook",
                "connection-type": "fsspec",
            },
        ],
        "extra-links": ["airflow_provider_sparktune.links.MlflowRunLink"],
    }
