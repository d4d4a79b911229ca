"""The XCom contract: a TuningResult as JSON-native data (no numpy scalars, no NaN, no tuples)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_sparktune.values import json_native

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.records import TuningResult


def to_xcom(
    result: TuningResult,
    *,
    mlflow: Mapping[str, str] | None = None,
    staging: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The operator's return value, exactly the shape docs/xcom-and-mlflow.md documents."""
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
                "pruned": result.trials_pruned,
                "lost": result.trials_lost,  # attempts whose Spark task was lost, run again
            },
            "stopped_reason": result.stopped_reason,
            "mlflow": dict(mlflow or {"tracking_uri": "", "experiment_id": "", "run_id": ""}),
            "staging": dict(staging) if staging is not None else None,
            "duration_s": round(result.duration_s, 3),
            "efficiency": round(result.efficiency, 4),
            "trial_overhead_s": round(result.trial_overhead_s, 4),
            "startup_s": None if result.startup_s is None else round(result.startup_s, 3),
            "drain_s": None if result.drain_s is None else round(result.drain_s, 3),
            **(_front(result) if result.spec.directions else {}),
        }
    )


def _front(result: TuningResult) -> dict[str, Any]:
    """A multi-objective run: its directions and the Pareto front's params and losses."""
    return {
        "directions": dict(result.spec.directions),
        "pareto_front": [{"tid": r.tid, "params": r.params, "losses": r.losses} for r in result.pareto_front],
    }


# Parameter values are the search space's own data, returned as they are: a consumer trains with them.
_PARAMETER_KEYS = ("best_params", "argmin", "pareto_front")


def redacted(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` with every string but the parameter values through the redactor (``redaction.py``):
    URIs lose their userinfo and credential query values (``tracking_uri``, ``staging.uri``, ...)."""
    from airflow_provider_sparktune.redaction import redact_values

    return {k: v if k in _PARAMETER_KEYS else redact_values(v) for k, v in value.items()}


def with_comparison(
    value: Mapping[str, Any], *, tuning_key: str, improved: bool | None, previous_best_loss: float | None
) -> dict[str, Any]:
    """The XCom value the operator returns and its asset events carry: ``value`` with the comparison
    against earlier runs of the tuning key, and no credentials in any URI it holds."""
    out = redacted(value)
    out["tuning_key"] = tuning_key
    out["improved"] = improved
    out["previous_best_loss"] = previous_best_loss
    return json_native(out)
