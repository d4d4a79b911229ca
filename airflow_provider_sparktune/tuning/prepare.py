"""Everything about a run that can be checked before Spark is touched, checked once.

``prepare_run`` checks the settings, the space, the objective (and its pickle) and the search
algorithm, and pickles the objective once: bad input fails here, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sparktune.data.staged import StagedData
from airflow_provider_sparktune.data.staging import StagingPlan
from airflow_provider_sparktune.search.factory import searcher_suggest
from airflow_provider_sparktune.tuning.algorithms import Suggest
from airflow_provider_sparktune.tuning.objective import build_trial_objective
from airflow_provider_sparktune.tuning.space import SpaceFacts, compile_space
from airflow_provider_sparktune.tuning.spec import TuningSpec


@dataclass(frozen=True)
class PreparedRun:
    """Everything checked before Spark is touched: compiled space, pickled-once objective, budget."""

    space: Any
    facts: SpaceFacts
    objective: Any
    suggest: Suggest
    spec: TuningSpec
    declared_space: Any = None  # the space as given (JSON text parsed): what the MLflow run records

    @property
    def staged(self) -> StagedData | None:
        """The staged data the objective reads, when there is any."""
        data = getattr(self.objective, "data", None)
        return data if isinstance(data, StagedData) else None


def prepare_run(
    search_space: Any,
    objective: Any,
    *,
    objective_kwargs: Mapping[str, Any] | str | None = None,
    data: Any = None,
    **settings: Any,
) -> PreparedRun:
    """Validate every argument that needs no Spark; raises a SparktuneError naming the field.

    ``settings`` are the fields of :class:`~airflow_provider_sparktune.TuningSpec` (max_evals, parallelism, algo, seed, timeout,
    loss_threshold, early_stop_after, dispatcher, max_failed_trials, max_failure_ratio, pruner,
    algo_options, directions).
    """
    spec = TuningSpec.from_settings(settings)
    compiled = compile_space(search_space)
    space = compiled.expression
    if isinstance(data, StagingPlan):
        data = StagedData.open(data)
    trial_objective = build_trial_objective(
        objective, data=data, objective_kwargs=objective_kwargs, space=space, directions=spec.directions
    )
    suggest = searcher_suggest(spec, space)  # an unmappable space or a missing package fails here
    return PreparedRun(space, compiled.facts, trial_objective, suggest, spec, compiled.declared)
