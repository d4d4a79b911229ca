"""The search space as Optuna sees it: each hyperopt label becomes one Optuna distribution.

The space stays one hyperopt expression (``tuning/space.py``): records, MLflow params, resume and
warm start read points as ``{label: value}`` whichever searcher proposed them. Here each label of
that expression is mapped once, before Spark, to the Optuna distribution whose values are the
label's values (a ``choice`` label holds the option's index), and a point is drawn by walking the
expression define-by-run: at a ``choice``, only the chosen option's labels are asked for, so nested
choices are conditional parameters in Optuna too. What has no Optuna counterpart is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sparktune.exceptions import SearchSpaceError

_FIX = "or keep hyperopt's algo='tpe'"


@dataclass(frozen=True)
class LabelDist:
    """How one label is asked of an Optuna trial."""

    kind: str  # "float", "int" or "index" (a choice: the option's index)
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Any, label: str) -> Any:
        if self.kind == "index":
            return trial.suggest_categorical(label, list(range(int(self.high))))
        if self.kind == "int":
            return trial.suggest_int(label, int(self.low), int(self.high))
        return trial.suggest_float(label, self.low, self.high, step=self.step, log=self.log)

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "index":
            return CategoricalDistribution(list(range(int(self.high))))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, step=self.step, log=self.log)


class OptunaSpace:
    """A hyperopt expression mapped to Optuna distributions; raises SearchSpaceError if it cannot be."""

    def __init__(self, expression: Any) -> None:
        from hyperopt.pyll import as_apply

        self.root = as_apply(expression)
        self.dists: dict[str, LabelDist] = {}
        problems: list[str] = []
        self._map(self.root, problems, set())
        if problems:
            raise SearchSpaceError("\n".join(dict.fromkeys(problems)))

    def sample(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` for the labels active along the branches it chooses: ``{label: value}``."""
        vals: dict[str, Any] = {}
        self._walk(self.root, lambda label: self.dists[label].suggest(trial, label), vals)
        return vals

    def active(self, vals: Mapping[str, Any]) -> dict[str, Any]:
        """The Optuna distributions of the labels a point uses (for telling a trial Optuna did not ask)."""
        seen: dict[str, Any] = {}
        self._walk(self.root, lambda label: vals[label], seen)
        return {label: self.dists[label].distribution() for label in seen}

    # -- walking -------------------------------------------------------------------------------

    def _walk(self, node: Any, value_of: Callable[[str], Any], vals: dict[str, Any]) -> None:
        if node.name == "hyperopt_param":
            label = node.arg["label"].obj
            if label not in vals:
                vals[label] = value_of(label)
            return
        if node.name == "switch":
            index_node, options = node.pos_args[0], node.pos_args[1:]
            self._walk(index_node, value_of, vals)
            label = index_node.arg["label"].obj if index_node.name == "hyperopt_param" else None
            index = int(vals[label]) if label is not None else int(index_node.obj)
            self._walk(options[index], value_of, vals)
            return
        for child in node.inputs():
            self._walk(child, value_of, vals)

    def _map(self, node: Any, problems: list[str], seen: set[int]) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if node.name == "switch":
            index_node = node.pos_args[0]
            if index_node.name == "hyperopt_param" and index_node.arg["obj"].name == "randint":
                self.dists[index_node.arg["label"].obj] = LabelDist("index", high=len(node.pos_args) - 1)
                seen.add(id(index_node))
            elif index_node.name == "hyperopt_param":
                label = index_node.arg["label"].obj
                problems.append(
                    f"search_space: {label!r} is a pchoice; Optuna's samplers take no option probabilities. "
                    f"Use choice (equal probabilities) {_FIX}"
                )
                seen.add(id(index_node))
        elif node.name == "hyperopt_param":
            label = node.arg["label"].obj
            mapped = _label_dist(node.arg["obj"])
            if isinstance(mapped, str):
                problems.append(f"search_space: {label!r} {mapped} {_FIX}")
            else:
                self.dists[label] = mapped
            return
        for child in node.inputs():
            self._map(child, problems, seen)


def _label_dist(dist: Any) -> LabelDist | str:
    """The Optuna form of one hyperopt distribution node, or why there is none."""
    args = list(dist.pos_args)
    if not all(arg.name == "literal" for arg in args):
        return "has bounds computed at run time; Optuna needs constant bounds: give numbers"
    values = [arg.obj for arg in args]
    name = dist.name
    if name == "uniform":
        return LabelDist("float", float(values[0]), float(values[1]))
    if name == "loguniform":
        return LabelDist("float", math.exp(values[0]), math.exp(values[1]), log=True)
    if name == "quniform":
        low, high, q = values
        return LabelDist("float", round(low / q) * q, round(high / q) * q, step=float(q))
    if name == "randint":
        low, high = (0, values[0]) if len(values) == 1 else (values[0], values[1])
        return LabelDist("int", int(low), int(high) - 1)
    if name == "qloguniform":
        return "is a qloguniform; Optuna has no log scale with a step. Use loguniform, or quniform"
    if name in ("normal", "qnormal", "lognormal", "qlognormal"):
        return f"is a {name}, which has no bounds; Optuna samples within bounds. Use uniform or loguniform"
    return (
        f"is a {name}, which has no Optuna counterpart; use uniform, loguniform, quniform, randint or choice"
    )
