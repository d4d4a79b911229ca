"""The XCom contract: a TuningResult as JSON-native data (no numpy scalars, no NaN, no tuples)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_sparktune.engine import TuningResult


def json_native(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats into plain JSON values."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # numpy.float64 is a float subclass: make it a plain float
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_native(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return json_native(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return json_native(tolist())
    return str(value)


def to_xcom(
    result: TuningResult,
    *,
    mlflow: Mapping[str, str] | None = None,
    staging: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The operator's return value, exactly the shape documented in the README."""
    return json_native(
        {
            "best_params": result.best_params,
            "best_loss": result.best_loss,
            "argmin": result.argmin,
            "trials": {
                "total": result.trials_total,
                "ok": result.trials_ok,
                "failed": result.trials_failed,
                "cancelled": result.trials_cancelled,
            },
            "stopped_reason": result.stopped_reason,
            "mlflow": dict(mlflow or {"tracking_uri": "", "experiment_id": "", "run_id": ""}),
            "staging": dict(staging) if staging is not None else None,
            "duration_s": round(result.duration_s, 3),
            "efficiency": round(result.efficiency, 4),
            "trial_overhead_s": round(result.trial_overhead_s, 4),
        }
    )
