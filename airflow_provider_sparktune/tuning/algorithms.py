"""The search algorithms behind ``algo``, seeded per trial, with warm-start points served first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.tracking.history import EarlierTrial
from airflow_provider_sparktune.tuning.earlier_trials import new_trial_doc

Suggest = Callable[..., list[Any]]  # hyperopt's algo signature: (new_ids, domain, trials, seed) -> docs


def algorithm(name: str) -> Suggest:
    """hyperopt's ``suggest`` for ``name``; an extra package that is missing fails here, before Spark."""
    if name == "atpe":
        try:
            import lightgbm  # noqa: F401  # hyperopt imports it only at the first suggestion
            from hyperopt import atpe
        except ImportError as err:
            raise TuningConfigError(
                f"algo: 'atpe' needs extra packages ({err}); install lightgbm or use 'tpe'"
            ) from None
        return atpe.suggest
    from hyperopt import anneal, rand, tpe

    return {"tpe": tpe.suggest, "rand": rand.suggest, "anneal": anneal.suggest}[name]


def per_trial_seeded(algo: Suggest, base_seed: int | None) -> Suggest:
    """Seed each suggestion by (seed, trial id) so batching by timing does not change the points."""
    import numpy as np

    def suggest(new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[Any]:
        docs: list[Any] = []
        for new_id in new_ids:
            trial_seed = (
                seed
                if base_seed is None
                else int(np.random.SeedSequence([base_seed, new_id]).generate_state(1)[0])
            )
            docs.extend(algo([new_id], domain, trials, trial_seed))
        return docs

    return suggest


class WarmStartSuggest:
    """Suggests the given points first, in order, then asks ``algo``; remembers which tid got which."""

    def __init__(self, points: Sequence[EarlierTrial], labels: Sequence[str], algo: Suggest) -> None:
        self.points = list(points)
        self.labels, self.algo = labels, algo
        self.assigned: dict[int, EarlierTrial] = {}

    def __call__(self, new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[Any]:
        docs: list[Any] = []
        rest: list[int] = []
        for new_id in new_ids:
            if self.points:
                point = self.points.pop(0)
                self.assigned[new_id] = point
                docs.append(new_trial_doc(trials, new_id, point.vals, self.labels))
            else:
                rest.append(new_id)
        if rest:
            docs.extend(self.algo(rest, domain, trials, seed))
        return docs
