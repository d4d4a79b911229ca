"""Trials of earlier runs brought into a new one: checked against the current space, rebuilt as docs.

A retry resumes the finished trials of the earlier tries of its task instance; a nightly run warm
starts from the best points of the last successful runs. Both arrive as ``{label: value}`` for the
labels that were active, which is what the ``sparktune.vals`` tag of a trial run holds. The space may
have changed since, so each point is checked against the current space before it is used: every
active label present and inside its distribution, no label the space no longer has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_sparktune.tracking.history import EarlierTrial
from airflow_provider_sparktune.tuning.trial import PRUNED_STEP_KEY


def space_labels(space: Any) -> tuple[str, ...]:
    """Every hyperparameter label of a hyperopt expression, in graph order."""
    from hyperopt.pyll import as_apply, dfs

    return tuple(node.arg["label"].obj for node in dfs(as_apply(space)) if node.name == "hyperopt_param")


def misfit(space: Any, vals: Mapping[str, Any]) -> str | None:
    """Why ``vals`` is not a point of ``space`` (None when it is one)."""
    from hyperopt.pyll import as_apply

    checker = _FitChecker(vals)
    checker.visit(as_apply(space))
    if checker.problem:
        return checker.problem
    extra = sorted(set(vals) - checker.active)
    if extra:
        known = set(space_labels(space))
        gone = [label for label in extra if label not in known]
        if gone:
            return f"label(s) {', '.join(map(repr, gone))} no longer in the search space"
        return f"label(s) {', '.join(map(repr, extra))} not active for this point in the current space"
    return None


def split_fitting(
    space: Any, points: Sequence[EarlierTrial]
) -> tuple[list[EarlierTrial], list[tuple[EarlierTrial, str]]]:
    """(points that fit the space, (point, reason) for those that do not)."""
    kept: list[EarlierTrial] = []
    dropped: list[tuple[EarlierTrial, str]] = []
    for point in points:
        reason = misfit(space, point.vals)
        if reason is None:
            kept.append(point)
        else:
            dropped.append((point, reason))
    return kept, dropped


def new_trial_doc(trials: Any, tid: int, vals: Mapping[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """A NEW trial document for a given point: what a suggest algorithm would have returned."""
    misc = {
        "tid": tid,
        "cmd": ("domain_attachment", "FMinIter_Domain"),
        "workdir": None,
        "idxs": {label: [tid] if label in vals else [] for label in labels},
        "vals": {label: [vals[label]] if label in vals else [] for label in labels},
    }
    return dict(trials.new_trial_docs([tid], [None], [{"status": "new"}], [misc])[0])


def finished_trial_doc(trials: Any, tid: int, earlier: EarlierTrial, labels: Sequence[str]) -> dict[str, Any]:
    """A DONE (or ERROR) trial document carrying an earlier result, for ``trials.insert_trial_docs``."""
    from datetime import datetime, timezone

    from hyperopt import base

    doc = new_trial_doc(trials, tid, earlier.vals, labels)

    def when(stamp: float | None) -> datetime:
        moment = datetime.now(timezone.utc) if stamp is None else datetime.fromtimestamp(stamp, timezone.utc)
        return moment.replace(tzinfo=None, microsecond=(moment.microsecond // 1000) * 1000)

    doc["book_time"], doc["refresh_time"] = when(earlier.started_at), when(earlier.finished_at)
    if earlier.status in ("ok", "pruned"):
        doc["state"] = base.JOB_STATE_DONE
        doc["result"] = {"loss": earlier.loss, "status": base.STATUS_OK, "metrics": dict(earlier.metrics)}
        if earlier.status == "pruned":
            doc["result"][PRUNED_STEP_KEY] = earlier.pruned_step
    else:
        doc["state"] = base.JOB_STATE_ERROR
        doc["result"] = {"status": base.STATUS_FAIL}
        doc["misc"]["error"] = ("resumed", earlier.error or "failed in an earlier try")
    return doc


class _FitChecker:
    """Walks the expression along the branches ``vals`` selects, checking each value it meets."""

    def __init__(self, vals: Mapping[str, Any]) -> None:
        self.vals = vals
        self.active: set[str] = set()
        self.problem: str | None = None

    def visit(self, node: Any) -> None:
        if self.problem:
            return
        if node.name == "switch":
            index_node, options = node.pos_args[0], node.pos_args[1:]
            self.visit(index_node)
            if self.problem:
                return
            index = self._index_of(index_node)
            if index is None or not 0 <= index < len(options):
                self.problem = f"choice {index!r} is not one of the {len(options)} options"
                return
            self.visit(options[index])
            return
        if node.name == "hyperopt_param":
            self._param(node)
            return
        for child in node.inputs():
            self.visit(child)

    def _index_of(self, node: Any) -> int | None:
        if node.name == "hyperopt_param":
            value = self.vals.get(node.arg["label"].obj)
            return int(value) if value is not None and _is_int_like(value) else None
        if node.name == "literal":
            return int(node.obj)
        return None

    def _param(self, node: Any) -> None:
        label = node.arg["label"].obj
        if label not in self.vals:
            self.problem = f"no value for {label!r}, which the current search space needs"
            return
        self.active.add(label)
        value, dist = self.vals[label], node.arg["obj"]
        reason = _outside(dist, value)
        if reason:
            self.problem = f"{label}={value!r} {reason}"


def _literals(dist: Any) -> list[Any] | None:
    args = list(dist.pos_args)
    if not all(arg.name == "literal" for arg in args):
        return None
    return [arg.obj for arg in args]


def _is_int_like(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


def _outside(dist: Any, value: Any) -> str | None:
    """Why ``value`` cannot come from distribution node ``dist`` (None when it can, or when unknown)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "is not a finite number"
    name = dist.name
    if name == "categorical":
        upper = (
            len(dist.pos_args[0].pos_args) if dist.pos_args and dist.pos_args[0].name == "pos_args" else None
        )
        if upper is None or (_is_int_like(value) and 0 <= value < upper):
            return None
        return f"is not one of the {upper} options"
    args = _literals(dist)
    if args is None:
        return None  # bounds computed at run time: nothing to check against
    if name == "randint":
        low, high = (0, args[0]) if len(args) == 1 else (args[0], args[1])
        if _is_int_like(value) and low <= value < high:
            return None
        return f"is outside randint [{low}, {high})"
    if name in ("uniform", "quniform", "loguniform", "qloguniform"):
        low, high = args[0], args[1]
        if name.endswith("loguniform"):
            low, high = math.exp(low), math.exp(high)
        if name.startswith("q"):
            q = args[2]
            if not _is_multiple(value, q):
                return f"is not a multiple of q={q}"
            low, high = round(low / q) * q, round(high / q) * q
        if low - _tolerance(low) <= value <= high + _tolerance(high):
            return None
        return f"is outside [{low:g}, {high:g}]"
    if name in ("qnormal", "qlognormal") and not _is_multiple(value, args[2]):
        return f"is not a multiple of q={args[2]}"
    if name in ("lognormal", "qlognormal") and value < 0:
        return "is negative; a lognormal value is > 0"
    return None


def _tolerance(bound: float) -> float:
    return 1e-9 * max(1.0, abs(bound))


def _is_multiple(value: float, q: float) -> bool:
    ratio = value / q
    return abs(ratio - round(ratio)) <= 1e-6
