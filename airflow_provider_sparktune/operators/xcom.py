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


def with_comparison(
    value: Mapping[str, Any], *, tuning_key: str, improved: bool | None, previous_best_loss: float | None
) -> dict[str, Any]:
    """The XCom value the operator returns and its asset events carry: ``value`` with the comparison
    against earlier runs of the tuning key, and no user or password in any URI it holds."""
    from airflow_provider_sparktune.operators.assets import redact_uri

    out = dict(value)
    out["mlflow"] = {
        **out.get("mlflow", {}),
        "tracking_uri": redact_uri(out.get("mlflow", {}).get("tracking_uri", "")),
    }
    if isinstance(out.get("staging"), Mapping):
        out["staging"] = {**out["staging"], "uri": redact_uri(out["staging"].get("uri"))}
    out["tuning_key"] = tuning_key
    out["improved"] = improved
    out["previous_best_loss"] = previous_best_loss
    return json_native(out)
