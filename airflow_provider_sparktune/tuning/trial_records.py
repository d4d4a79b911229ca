"""A :class:`TrialRecord` from what a trial left: a hyperopt trial document of this run, or a trial
of an earlier try read back from MLflow.

Both follow one rule: the params are the space evaluated at the trial's vals, and a loss, metrics
and named losses count only for a trial that finished ok (or was pruned, for the loss).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timezone
from typing import Any

from airflow_provider_sparktune.tracking.history import EarlierTrial
from airflow_provider_sparktune.tuning.records import TrialRecord, TrialStatus
from airflow_provider_sparktune.tuning.trial import CURVE_KEY, LOSSES_KEY, PRUNED_STEP_KEY, losses_in_metrics
from airflow_provider_sparktune.values import json_native

log = logging.getLogger(__name__)

_COUNTS_LOSS = ("ok", "pruned")


def record_from_doc(doc: Mapping[str, Any], space: Any, *, warm: EarlierTrial | None = None) -> TrialRecord:
    """A finished (done, failed or cancelled) trial document; ``warm``: the warm-start point it ran."""
    from hyperopt import base

    vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if len(v)}
    result = doc.get("result") or {}
    state = doc["state"]
    error = None
    pruned_step = result.get(PRUNED_STEP_KEY) if state == base.JOB_STATE_DONE else None
    if pruned_step is not None:
        status: TrialStatus = "pruned"
    elif state in (base.JOB_STATE_ERROR, base.JOB_STATE_CANCEL):
        status = "failed" if state == base.JOB_STATE_ERROR else "cancelled"
        error = _error_text(doc["misc"].get("error"))
    elif result.get("status") == base.STATUS_OK:
        status = "ok"
    else:
        status = "failed"
        error = str(result.get("failure") or f"objective returned status {result.get('status')!r}")
    loss = result.get("loss") if status in _COUNTS_LOSS else None
    return TrialRecord(
        tid=int(doc["tid"]),
        status=status,
        loss=None if loss is None else float(loss),
        params=_params(space, vals, int(doc["tid"])),
        vals=json_native(vals),
        metrics=dict(result.get("metrics") or {}) if status == "ok" else {},
        error=error,
        started_at=_timestamp(doc.get("book_time")),
        finished_at=_timestamp(doc.get("refresh_time")),
        eval_s=doc["misc"].get("sparktune_eval_s"),
        origin="warm_start" if warm is not None else "new",
        source_run_id=warm.source_run_id if warm is not None else None,
        curve=tuple((int(step), float(value)) for step, value in result.get(CURVE_KEY) or ()),
        pruned_step=pruned_step,
        losses=dict(result.get(LOSSES_KEY) or {}) if status == "ok" else {},
    )


def record_from_earlier(tid: int, earlier: EarlierTrial, space: Any, *, named_losses: bool) -> TrialRecord:
    """A trial of an earlier try, resumed as trial ``tid``; ``named_losses``: a multi-objective run,
    whose losses MLflow holds as ``loss.<name>`` metrics."""
    ok = earlier.status in _COUNTS_LOSS
    return TrialRecord(
        tid=tid,
        status=earlier.status,
        loss=earlier.loss if ok else None,
        params=_params(space, earlier.vals, tid),
        vals=json_native(earlier.vals),
        metrics=dict(earlier.metrics) if ok else {},
        error=None if ok else earlier.error,
        started_at=earlier.started_at,
        finished_at=earlier.finished_at,
        origin="resumed",
        source_run_id=earlier.source_run_id,
        pruned_step=earlier.pruned_step,
        losses=losses_in_metrics(earlier.metrics) if ok and named_losses else {},
    )


def _params(space: Any, vals: Mapping[str, Any], tid: int) -> dict[str, Any]:
    """The space at ``vals``; ``{}`` when it cannot be evaluated there, said in the log with the reason:
    a trial without its params in MLflow, XCom and trials.json is worth a line."""
    from hyperopt import space_eval

    try:
        params = json_native(space_eval(space, dict(vals)))
    except Exception as err:  # a cancelled trial may carry partial vals; a changed space, others
        log.warning(
            "trial %d: its parameters could not be evaluated from its values %s (%s: %s); it is recorded "
            "with no params (its values stay in vals)",
            tid,
            _short(dict(vals)),
            type(err).__name__,
            _short(err),
        )
        return {}
    return params if isinstance(params, dict) else {"value": params}


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc).timestamp()


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, (tuple, list)) and len(error) == 2:
        kind, detail = error
        return str(detail) if detail else str(kind)
    return str(error)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= 300 else text[:297] + "..."
