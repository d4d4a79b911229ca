"""The searcher names ``algo`` accepts and the settings checks that need no search library."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_sparktune.exceptions import TuningConfigError

HYPEROPT_ALGOS = ("tpe", "rand", "anneal", "atpe")
OPTUNA_PREFIX = "optuna."
# algo name -> Optuna sampler class name (in ``optuna.samplers``)
OPTUNA_SAMPLERS = {
    "optuna.tpe": "TPESampler",
    "optuna.gp": "GPSampler",
    "optuna.cmaes": "CmaEsSampler",
    "optuna.random": "RandomSampler",
    "optuna.qmc": "QMCSampler",
    "optuna.nsga2": "NSGAIISampler",
}
SEARCHERS = HYPEROPT_ALGOS + tuple(OPTUNA_SAMPLERS)
DIRECTIONS = ("minimize", "maximize")


def is_optuna(algo: str) -> bool:
    return algo.startswith(OPTUNA_PREFIX)


def check_algo(algo: Any) -> None:
    if algo not in SEARCHERS:
        raise TuningConfigError(f"algo: unknown algorithm {algo!r}; use one of {', '.join(SEARCHERS)}")


def _json_object_text(field: str, example: str, text: str) -> Any:
    """A rendered template of a JSON-object setting: the object, or None for empty text."""
    if not text.strip() or text.strip() == "None":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TuningConfigError(
            f"{field}: not valid JSON ({err.msg}); pass an object such as {example}"
        ) from None


def options_from_text(text: str) -> Any:
    """A rendered ``algo_options`` template."""
    return _json_object_text("algo_options", '{"n_startup_trials": 20}', text)


def directions_from_text(text: str) -> Any:
    """A rendered ``directions`` template."""
    return _json_object_text("directions", '{"error": "minimize", "latency_ms": "minimize"}', text)


def check_algo_options(algo: str, options: Any) -> dict[str, Any]:
    """The options as a plain dict; refused when they are not an object or the searcher takes none."""
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise TuningConfigError(
            f"algo_options: {options!r} must be a JSON object of the sampler's keyword arguments or None"
        )
    if options and not is_optuna(algo):
        raise TuningConfigError(
            f"algo_options: hyperopt's {algo!r} takes no options here; drop algo_options or use an "
            f"Optuna searcher ({', '.join(OPTUNA_SAMPLERS)})"
        )
    if "seed" in options:
        raise TuningConfigError(
            "algo_options.seed: the run's `seed` setting seeds the sampler; move it there"
        )
    return dict(options)


def check_directions(directions: Any) -> dict[str, str] | None:
    """``{loss name: "minimize" | "maximize"}`` in order, the first one primary; None: one loss."""
    if directions is None:
        return None
    if not isinstance(directions, Mapping) or len(directions) < 2:
        raise TuningConfigError(
            f"directions: {directions!r} must map two or more loss names to 'minimize' or 'maximize' "
            '(e.g. {"error": "minimize", "latency_ms": "minimize"}), or be None for one loss'
        )
    for name, direction in directions.items():
        if not isinstance(name, str) or not name:
            raise TuningConfigError(f"directions: loss name {name!r} must be a non-empty string")
        if direction not in DIRECTIONS:
            raise TuningConfigError(
                f"directions.{name}: {direction!r} is not a direction; use 'minimize' or 'maximize'"
            )
    return dict(directions)
