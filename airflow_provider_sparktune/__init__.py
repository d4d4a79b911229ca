"""Apache Airflow provider for scheduled hyperparameter tuning on Spark, every trial tracked in MLflow.

Trials run on a resident dispatcher (or hyperopt's SparkTrials), the data is staged by broadcast or
reload, a pruner stops hopeless trials, and the result comes back through XCom and asset events.

The tuning core works without Airflow, and its public names are all here:
``from airflow_provider_sparktune import run_tuning, build_space``. Names are loaded on first use,
so importing the package (as every Spark executor does) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from airflow_provider_sparktune.exceptions import (
    AllTrialsFailedError,
    SparktuneError,
    TooManyFailedTrialsError,
    TrackingError,
    TrialPruned,
    TuningCancelledError,
    TuningConfigError,
)

__version__ = "0.1.0"

_LAZY = {
    "run_tuning": "airflow_provider_sparktune.tuning.session",
    "TuningSession": "airflow_provider_sparktune.tuning.session",
    "TrackingOptions": "airflow_provider_sparktune.tuning.session",
    "TuningResult": "airflow_provider_sparktune.tuning.records",
    "TrialRecord": "airflow_provider_sparktune.tuning.records",
    "Progress": "airflow_provider_sparktune.tuning.records",
    "TuningSpec": "airflow_provider_sparktune.tuning.spec",
    "PreparedRun": "airflow_provider_sparktune.tuning.prepare",
    "prepare_run": "airflow_provider_sparktune.tuning.prepare",
    "RunControl": "airflow_provider_sparktune.tuning.run",
    "execute_run": "airflow_provider_sparktune.tuning.run",
    "build_space": "airflow_provider_sparktune.tuning.space",
    "validate_space": "airflow_provider_sparktune.tuning.space",
    "space_facts": "airflow_provider_sparktune.tuning.space",
    "SpaceFacts": "airflow_provider_sparktune.tuning.space",
    "StagedData": "airflow_provider_sparktune.data.staged",
    "StagingPlan": "airflow_provider_sparktune.data.staging",
    "plan_dataset": "airflow_provider_sparktune.data.staging",
}

__all__ = [
    "AllTrialsFailedError",
    "SparktuneError",
    "TooManyFailedTrialsError",
    "TrackingError",
    "TrialPruned",
    "TuningCancelledError",
    "TuningConfigError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
