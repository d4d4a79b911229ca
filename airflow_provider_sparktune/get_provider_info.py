"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_sparktune import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-sparktune",
        "name": "Sparktune",
        "description": (
            "Apache Airflow provider for scheduled hyperparameter tuning on Spark: trials on a resident "
            "dispatcher (or hyperopt's SparkTrials), data staged by broadcast or reload, every trial "
            "tracked in MLflow, pruning, asset events and a model registry gate"
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Sparktune",
                "external-doc-url": "https://airflow-provider-sparktune.readthedocs.io/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Sparktune",
                "python-modules": [
                    "airflow_provider_sparktune.operators.hyperopt_spark",
                    "airflow_provider_sparktune.operators.registry_gate",
                ],
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
                "hook-name": "MLflow",
                "connection-type": "mlflow",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"host": "Tracking URI", "password": "Token"},
                    "placeholders": {"host": "http://mlflow:5000", "password": "optional bearer token"},
                },
            },
            {
                "hook-class-name": "airflow_provider_sparktune.hooks.staging.DataStagingHook",
                "hook-name": "Filesystem (fsspec)",
                "connection-type": "fsspec",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"login": "Key / account / user", "password": "Secret"},
                    "placeholders": {
                        "host": "(s)ftp, smb, hdfs, http: the server the credentials belong to",
                        "port": "optional: the server's port",
                        "login": "optional: s3 key, abfs account name, (s)ftp user",
                        "password": "optional: s3 secret, abfs account key, (s)ftp password",
                        "extra": '{"client_kwargs": {"endpoint_url": "https://minio:9000"}, '
                        '"allowed_prefixes": ["s3://features/"]}',
                    },
                },
            },
        ],
        "extra-links": ["airflow_provider_sparktune.links.MlflowRunLink"],
    }
