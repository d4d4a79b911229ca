"""Apache Airflow provider for scheduled hyperparameter tuning with hyperopt SparkTrials and MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
