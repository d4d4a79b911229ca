"""The searcher a spec names, built and checked before Spark: missing packages, options, the space."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_sparktune.search.base import Searcher, SearcherSuggest
from airflow_provider_sparktune.search.names import is_optuna

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.spec import TuningSpec


def make_searcher(spec: TuningSpec, space: Any) -> Searcher:
    """hyperopt's algorithm or Optuna's sampler for ``spec.algo``; raises a SparktuneError naming the field."""
    if is_optuna(spec.algo):
        from airflow_provider_sparktune.search.optuna_searcher import OptunaSearcher, check_installed
        from airflow_provider_sparktune.search.optuna_space import OptunaSpace

        check_installed(spec.algo)
        return OptunaSearcher(spec.algo, OptunaSpace(space), spec.algo_options, spec.seed, spec.directions)
    from airflow_provider_sparktune.search.hyperopt_searcher import HyperoptSearcher

    return HyperoptSearcher(spec.algo)


def searcher_suggest(spec: TuningSpec, space: Any) -> SearcherSuggest:
    """The searcher behind the ``suggest`` call the dispatchers make."""
    from airflow_provider_sparktune.tuning.earlier_trials import space_labels

    return SearcherSuggest(make_searcher(spec, space), spec.seed, space_labels(space))
