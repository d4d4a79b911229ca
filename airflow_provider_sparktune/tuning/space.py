"""Declarative search spaces: plain data (a dict or its JSON text) compiled to a hyperopt expression.

DAG arguments are templated and travel as JSON, so the space is written as data, not as ``hp.*``
calls. A node is a distribution when it is a dict with an ``"hp"`` key::

    {"lr": {"hp": "loguniform", "low": 1e-4, "high": 0.1},
     "model": {"hp": "choice", "label": "my_choice", "options": [
         {"name": "model a", "x": {"hp": "choice", "options": [1, 2, 4, 6, 8]}},
         {"name": "model b", "x": {"hp": "randint", "high": 5}}]}}

Everything else (numbers, strings, booleans, null, lists, dicts) is a constant that is passed through;
``{"hp": "const", "value": ...}`` escapes a literal dict that itself has an ``"hp"`` key. Validation
runs before any Spark job and reports every problem with its field path and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sparktune.exceptions import SearchSpaceError
from airflow_provider_sparktune.values import is_number

ROOT = "search_space"
MAX_PARALLELISM = 128  # SparkTrials' hard cap on concurrent trials
LABEL_KEY = "label"
DIST_KEY = "hp"


@dataclass(frozen=True)
class Distribution:
    """What one ``hp.*`` distribution takes in the declarative form."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    categorical: bool = False


DISTRIBUTIONS: dict[str, Distribution] = {
    "choice": Distribution(("options",), categorical=True),
    "pchoice": Distribution(("options",), categorical=True),
    "randint": Distribution(("high",), ("low",)),
    "uniform": Distribution(("low", "high")),
    "quniform": Distribution(("low", "high", "q")),
    "loguniform": Distribution(("low", "high")),
    "qloguniform": Distribution(("low", "high", "q")),
    "normal": Distribution(("mu", "sigma")),
    "qnormal": Distribution(("mu", "sigma", "q")),
    "lognormal": Distribution(("mu", "sigma")),
    "qlognormal": Distribution(("mu", "sigma", "q")),
    "uniformint": Distribution(("low", "high"), ("q",)),
    "const": Distribution(("value",)),
}


@dataclass(frozen=True)
class SpaceFacts:
    """Size facts of a space, used to choose ``max_evals`` and ``parallelism`` automatically."""

    labels: tuple[str, ...]
    n_ordinal: int
    n_categorical: int
    categorical_breadth: int
    kinds: Mapping[str, str] = field(default_factory=dict)

    @property
    def n_hyperparameters(self) -> int:
        return self.n_ordinal + self.n_categorical

    def suggested_max_evals(self) -> int:
        """20 x ordinal parameters + 15 x total categorical breadth (the original notebook's guidance)."""
        return max(1, 20 * self.n_ordinal + 15 * self.categorical_breadth)

    def suggested_parallelism(self, task_slots: int) -> int:
        """A small multiple (2x) of the hyperparameter count, capped by the cluster's slots and 128."""
        return max(1, min(2 * max(1, self.n_hyperparameters), task_slots, MAX_PARALLELISM))


def parse_space_spec(spec: Any) -> Any:
    """Accept a dict/list or the JSON text a rendered template produces."""
    if isinstance(spec, (str, bytes)):
        text = spec.decode() if isinstance(spec, bytes) else spec
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise SearchSpaceError(
                f"{ROOT}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                "pass a dict or a JSON object string"
            ) from None
    return spec


def is_hyperopt_expression(space: Any) -> bool:
    """True for an ``hp.*`` expression or a dict/list that holds one (``{"lr": hp.uniform(...)}``)."""
    from hyperopt.pyll import Apply

    if isinstance(space, Apply):
        return True
    if isinstance(space, Mapping):
        return any(is_hyperopt_expression(v) for v in space.values())
    if isinstance(space, (list, tuple)):
        return any(is_hyperopt_expression(v) for v in space)
    return False


def validate_space(spec: Any) -> SpaceFacts:
    """Check a parsed spec; raise one SearchSpaceError listing every problem with its field path."""
    if not isinstance(spec, (Mapping, list, tuple)):
        raise SearchSpaceError(
            f"{ROOT}: {type(spec).__name__} given; use a dict of hyperparameters (or its JSON text)"
        )
    checker = _Checker()
    checker.walk(spec, ROOT)
    if checker.problems:
        raise SearchSpaceError("\n".join(checker.problems))
    return checker.facts()


def build_space(spec: Any) -> Any:
    """Compile a declarative spec (dict, list or JSON text) to a hyperopt expression.

    A hyperopt expression (``hp.*`` result) is returned unchanged, so notebook users can keep theirs.
    """
    return compile_space(spec).expression


@dataclass(frozen=True)
class CompiledSpace:
    expression: Any  # what hyperopt samples
    facts: SpaceFacts
    declared: Any  # the spec as given, JSON text parsed (a hyperopt expression stays one)


def compile_space(spec: Any) -> CompiledSpace:
    """:func:`build_space` and :func:`space_facts` in one pass: the spec is parsed and checked once."""
    if is_hyperopt_expression(spec):
        return CompiledSpace(spec, _expression_facts(spec), spec)
    parsed = parse_space_spec(spec)
    facts = validate_space(parsed)
    return CompiledSpace(_compile(parsed, ROOT), facts, parsed)


def space_facts(spec: Any) -> SpaceFacts:
    """Size facts of a declarative spec or of a hyperopt expression."""
    if is_hyperopt_expression(spec):
        return _expression_facts(spec)
    return validate_space(parse_space_spec(spec))


def default_label(path: str) -> str:
    """The dotted path of a node without the root name: ``search_space.model.lr`` -> ``model.lr``."""
    if path == ROOT:
        return ROOT
    return path[len(ROOT) + 1 :] if path.startswith(ROOT + ".") else path


def _is_distribution(node: Any) -> bool:
    return isinstance(node, Mapping) and DIST_KEY in node


def _options(node: Mapping[str, Any]) -> Iterator[tuple[float | None, Any, str]]:
    """(probability, value, path suffix) for each option of a choice or pchoice node."""
    for i, option in enumerate(node["options"]):
        if node[DIST_KEY] == "choice":
            yield None, option, f".options[{i}]"
        elif isinstance(option, Mapping):
            yield option.get("p"), option.get("value"), f".options[{i}].value"
        else:
            yield option[0], option[1], f".options[{i}][1]"


class _Checker:
    """Walks a spec once, collecting problems and size facts."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.labels: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.n_ordinal = 0
        self.n_categorical = 0
        self.breadth = 0

    def facts(self) -> SpaceFacts:
        return SpaceFacts(
            labels=tuple(self.labels),
            n_ordinal=self.n_ordinal,
            n_categorical=self.n_categorical,
            categorical_breadth=self.breadth,
            kinds=dict(self.kinds),
        )

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def walk(self, node: Any, path: str) -> None:
        if _is_distribution(node):
            self.distribution(node, path)
        elif isinstance(node, Mapping):
            for key, value in node.items():
                if not isinstance(key, str):
                    self.fail(path, f"key {key!r} is not a string; JSON objects have string keys only")
                    continue
                self.param_key(key, path)
                self.walk(value, f"{path}.{key}")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                self.walk(value, f"{path}[{i}]")
        else:
            self.constant(node, path)

    def constant(self, node: Any, path: str) -> None:
        if node is None or isinstance(node, (str, bool, int)):
            return
        if isinstance(node, float):
            if not math.isfinite(node):
                self.fail(path, f"{node} is not JSON data; use a finite number or null")
            return
        self.fail(
            path,
            f"value of type {type(node).__name__} is not JSON data; use numbers, strings, booleans, "
            "null, lists and dicts (or pass a hyperopt expression as the whole space)",
        )

    def distribution(self, node: Mapping[str, Any], path: str) -> None:
        name = node[DIST_KEY]
        dist = DISTRIBUTIONS.get(name) if isinstance(name, str) else None
        if dist is None:
            known = ", ".join(sorted(DISTRIBUTIONS))
            self.fail(f"{path}.{DIST_KEY}", f"unknown distribution {name!r}; use one of: {known}")
            return
        allowed = {DIST_KEY, LABEL_KEY, *dist.required, *dist.optional}
        if name == "const":
            allowed.discard(LABEL_KEY)
        extra = sorted(repr(k) for k in node if k not in allowed)
        missing = [k for k in dist.required if k not in node]
        expected = ", ".join(k for k in (*dist.required, *dist.optional, LABEL_KEY) if k in allowed)
        if extra:
            self.fail(path, f"unknown key(s) {', '.join(extra)} for {name}; expected {expected}")
        if missing:
            self.fail(path, f"missing key(s) {', '.join(map(repr, missing))} for {name}; expected {expected}")
        if missing:
            return
        if name == "const":
            self.constant_tree(node["value"], f"{path}.value")
            return
        self.label(node, path)
        if dist.categorical:
            self.choice(node, path)
        else:
            self.n_ordinal += 1
            self.bounds(name, node, path)

    def param_key(self, key: str, path: str) -> None:
        """A key of the space is part of an MLflow param name (``model.lr``): MLflow must accept it."""
        from airflow_provider_sparktune.tracking.names import ALLOWED_TEXT, name_problem, suggested_name

        if name_problem(key) is not None and name_problem(suggested_name(key)) is None:
            self.fail(
                f"{path}.{key}",
                f"key {key!r} cannot be part of an MLflow param name (MLflow allows {ALLOWED_TEXT}); "
                f"rename it, e.g. {suggested_name(key)!r}",
            )
        elif name_problem(key) is not None:
            self.fail(f"{path}.{key}", f"key {key!r} cannot be an MLflow param name: it {name_problem(key)}")

    def constant_tree(self, node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                self.param_key(str(key), path)
                self.constant_tree(value, f"{path}.{key}")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                self.constant_tree(value, f"{path}[{i}]")
        else:
            self.constant(node, path)

    def label(self, node: Mapping[str, Any], path: str) -> None:
        label = node.get(LABEL_KEY, default_label(path))
        if not isinstance(label, str) or not label:
            self.fail(f"{path}.{LABEL_KEY}", "must be a non-empty string")
            return
        if label in self.labels:
            self.fail(
                f"{path}.{LABEL_KEY}" if LABEL_KEY in node else path,
                f"duplicate label {label!r} (already used at {self.labels[label]}); give each "
                "hyperparameter its own label",
            )
            return
        self.labels[label] = path
        self.kinds[label] = node[DIST_KEY]

    def choice(self, node: Mapping[str, Any], path: str) -> None:
        name, options = node[DIST_KEY], node["options"]
        self.n_categorical += 1
        if not isinstance(options, (list, tuple)) or not options:
            self.fail(f"{path}.options", f"{name} needs a non-empty list of options")
            return
        self.breadth += len(options)
        if name == "pchoice" and not self.pchoice_shape(options, path):
            return
        total = 0.0
        for i, (p, value, suffix) in enumerate(_options(node)):
            if p is not None:
                if not is_number(p) or not 0 <= p <= 1:
                    self.fail(f"{path}.options[{i}]", f"probability {p!r} must be in [0, 1]")
                else:
                    total += p
            self.walk(value, path + suffix)
        if name == "pchoice" and abs(total - 1.0) > 1e-6:
            self.fail(f"{path}.options", f"probabilities sum to {total:g}; they must sum to 1")

    def pchoice_shape(self, options: list[Any] | tuple[Any, ...], path: str) -> bool:
        ok = True
        for i, option in enumerate(options):
            pair = isinstance(option, (list, tuple)) and len(option) == 2
            keyed = isinstance(option, Mapping) and set(option) == {"p", "value"}
            if not (pair or keyed):
                self.fail(f"{path}.options[{i}]", 'pchoice options are {"p": prob, "value": v} or [prob, v]')
                ok = False
        return ok

    def bounds(self, name: str, node: Mapping[str, Any], path: str) -> None:
        numeric = [k for k in DISTRIBUTIONS[name].required + DISTRIBUTIONS[name].optional if k in node]
        bad = [k for k in numeric if not is_number(node[k])]
        for key in bad:
            self.fail(f"{path}.{key}", f"{node[key]!r} is not a finite number")
        if bad:
            return
        if name in ("randint", "uniformint"):
            for key in ("low", "high"):
                if key in node and not float(node[key]).is_integer():
                    self.fail(f"{path}.{key}", f"{name} bounds must be integers, got {node[key]!r}")
        low = node.get("low", 0)
        if "high" in node and not low < node["high"]:
            self.fail(path, f"low must be < high (got low={low!r}, high={node['high']!r})")
        if name in ("loguniform", "qloguniform") and low <= 0:
            self.fail(
                f"{path}.low",
                f"{name} bounds are in natural units and must be > 0 (got {low!r}); use uniform for ranges "
                "that include 0",
            )
        if "sigma" in node and node["sigma"] <= 0:
            self.fail(f"{path}.sigma", f"must be > 0 (got {node['sigma']!r})")
        if "q" in node and node["q"] <= 0:
            self.fail(f"{path}.q", f"must be > 0 (got {node['q']!r})")


def _compile(node: Any, path: str) -> Any:
    if _is_distribution(node):
        return _compile_distribution(node, path)
    if isinstance(node, Mapping):
        return {key: _compile(value, f"{path}.{key}") for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_compile(value, f"{path}[{i}]") for i, value in enumerate(node)]
    return node


def _compile_distribution(node: Mapping[str, Any], path: str) -> Any:
    from hyperopt import hp
    from hyperopt.pyll import scope

    name = node[DIST_KEY]
    if name == "const":
        return node["value"]
    label = node.get(LABEL_KEY, default_label(path))
    if name == "choice":
        return hp.choice(label, [_compile(value, path + suffix) for _, value, suffix in _options(node)])
    if name == "pchoice":
        return hp.pchoice(label, [(p, _compile(value, path + suffix)) for p, value, suffix in _options(node)])
    if name == "randint":
        return hp.randint(label, int(node.get("low", 0)), int(node["high"]))
    if name == "uniformint":  # hp.uniformint ignores q (hyperopt 0.3.0), so build it as hyperopt does
        return scope.int(hp.quniform(label, node["low"], node["high"], node.get("q", 1)))
    if name in ("loguniform", "qloguniform"):
        bounds = (math.log(node["low"]), math.log(node["high"]))
        return getattr(hp, name)(label, *bounds, *((node["q"],) if "q" in node else ()))
    args = [node[k] for k in DISTRIBUTIONS[name].required]
    return getattr(hp, name)(label, *args)


def _expression_facts(expr: Any) -> SpaceFacts:
    """Facts of a hand-built hyperopt expression: a randint or categorical node counts as categorical.

    (``hp.choice`` compiles to ``randint``, so the two cannot be told apart in an expression.)
    """
    from hyperopt.pyll import as_apply, dfs

    n_ordinal = n_categorical = breadth = 0
    kinds: dict[str, str] = {}
    for node in dfs(as_apply(expr)):
        if node.name != "hyperopt_param":
            continue
        dist = node.arg["obj"]
        kinds[node.arg["label"].obj] = dist.name
        if dist.name == "randint":
            bounds = [arg.obj for arg in dist.pos_args]
            n_categorical += 1
            breadth += int(bounds[-1] - (bounds[0] if len(bounds) == 2 else 0))
        elif dist.name == "categorical":
            n_categorical += 1
            breadth += len(dist.pos_args[0].pos_args)
        else:
            n_ordinal += 1
    return SpaceFacts(tuple(kinds), n_ordinal, n_categorical, breadth, kinds)
