"""The documented import path of the tuning core: ``from airflow_provider_sparktune.engine import run_tuning``.

The code lives in :mod:`airflow_provider_sparktune.tuning`; this module only re-exports it.
"""

from __future__ import annotations

from airflow_provider_sparktune.tuning.prepare import PreparedRun, prepare_run
from airflow_provider_sparktune.tuning.records import Progress, TrialRecord, TuningResult
from airflow_provider_sparktune.tuning.run import RunControl, execute_run
from airflow_provider_sparktune.tuning.session import TrackingOptions, TuningSession, run_tuning
from airflow_provider_sparktune.tuning.spec import TuningSpec

__all__ = [
    "PreparedRun",
    "Progress",
    "RunControl",
    "TrackingOptions",
    "TrialRecord",
    "TuningResult",
    "TuningSession",
    "TuningSpec",
    "execute_run",
    "prepare_run",
    "run_tuning",
]
