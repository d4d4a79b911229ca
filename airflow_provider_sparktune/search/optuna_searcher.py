"""Optuna's samplers as searchers: an in-memory study that hears of every trial as it runs and ends.

Each ask is ``study.ask()`` with the space walked define-by-run (``optuna_space``); the trials
still running stay RUNNING in the study, which is how Optuna's samplers account for them (TPE puts
them in its "above" group, the GP sampler conditions on them). Warm-start points are enqueued and
asked, so they too run as RUNNING trials; trials of earlier tries are added as finished ones.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Mapping
from typing import Any

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.search.base import Finished, History, Searcher
from airflow_provider_sparktune.search.names import OPTUNA_SAMPLERS
from airflow_provider_sparktune.search.optuna_space import OptunaSpace

log = logging.getLogger(__name__)

INSTALL = "pip install 'airflow-provider-sparktune[optuna]'"
# the packages a sampler needs beyond Optuna: (module, the extra that installs it)
NEEDS = {"optuna.gp": ("torch", "optuna-gp"), "optuna.cmaes": ("cmaes", "optuna")}
# samplers that fall back to independent sampling for categorical or conditional labels warn once per
# trial by default: the task log would fill with it
QUIET = {"optuna.gp", "optuna.cmaes", "optuna.qmc"}
SINGLE_OBJECTIVE = {"optuna.cmaes"}
MULTI_OBJECTIVE = {"optuna.nsga2"}


def check_installed(algo: str) -> None:
    """Refuse an Optuna searcher whose packages are missing, with the install command."""
    if importlib.util.find_spec("optuna") is None:
        raise TuningConfigError(f"algo: {algo!r} needs Optuna, which is not installed; {INSTALL}")
    module, extra = NEEDS.get(algo, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        raise TuningConfigError(
            f"algo: {algo!r} needs the {module!r} package, which is not installed; "
            f"pip install 'airflow-provider-sparktune[{extra}]' (or choose another algo)"
        )


def make_sampler(algo: str, options: Mapping[str, Any], seed: int | None) -> Any:
    """The sampler ``algo`` names, built with ``options``; bad options are refused naming the field."""
    import optuna

    kwargs = dict(options)
    if algo in QUIET:
        kwargs.setdefault("warn_independent_sampling", False)
    cls = getattr(optuna.samplers, OPTUNA_SAMPLERS[algo])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return cls(seed=seed, **kwargs)
        except (TypeError, ValueError) as err:
            raise TuningConfigError(
                f"algo_options: {OPTUNA_SAMPLERS[algo]} refuses {dict(options)!r}: {err}; "
                f"pass only its keyword arguments with JSON values (see optuna.samplers.{cls.__name__})"
            ) from None


class OptunaSearcher(Searcher):
    """One Optuna sampler over one in-memory study for the whole run."""

    def __init__(
        self,
        algo: str,
        space: OptunaSpace,
        options: Mapping[str, Any],
        base_seed: int | None,
        directions: Mapping[str, str] | None = None,
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial: the run logs its own
        self.algo, self.space, self.options = algo, space, dict(options)
        self.objectives = list(directions) if directions else None
        self.base_seed = base_seed
        sampler = make_sampler(algo, self.options, base_seed)
        if directions:
            self.study = optuna.create_study(sampler=sampler, directions=list(directions.values()))  # type: ignore[arg-type]
        else:
            self.study = optuna.create_study(sampler=sampler, direction="minimize")
        self.trials: dict[int, Any] = {}  # tid -> the study's trial, while it runs

    def ask(self, tid: int, history: History, seed: int) -> dict[str, Any]:
        if self.algo != "optuna.qmc":  # QMC's sequence is its seed's: one sampler for the run
            self.study.sampler = make_sampler(self.algo, self.options, seed)
        return self._ask(tid)

    def running(self, tid: int, vals: Mapping[str, Any]) -> None:
        self.study.enqueue_trial(dict(vals), skip_if_exists=False)
        self._ask(tid)

    def tell(self, result: Finished) -> None:
        from optuna.trial import TrialState

        trial = self.trials.pop(result.tid, None)
        if trial is None:
            self._add_finished(result)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if result.outcome == "ok" and (values := self._values(result)) is not None:
                self.study.tell(trial, values)
            elif result.outcome == "pruned" and result.loss is not None and not self.objectives:
                trial.report(result.loss, result.pruned_step or 0)
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, state=TrialState.FAIL)

    def _ask(self, tid: int) -> dict[str, Any]:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = self.study.ask()
            vals = self.space.sample(trial)
        self.trials[tid] = trial
        return vals

    def _values(self, result: Finished) -> float | list[float] | None:
        if self.objectives is None:
            return result.loss
        if not all(name in result.losses for name in self.objectives):
            return None
        return [result.losses[name] for name in self.objectives]

    def _add_finished(self, result: Finished) -> None:
        """A trial of an earlier try, which this study never asked: added as it ended."""
        from optuna.trial import TrialState, create_trial

        if result.outcome == "failed" or result.loss is None:
            return  # nothing to learn from
        values = self._values(result)
        try:
            distributions = self.space.active(result.vals)
            if result.outcome == "pruned":
                if self.objectives:
                    return
                trial = create_trial(
                    params=result.vals,
                    distributions=distributions,
                    state=TrialState.PRUNED,
                    intermediate_values={result.pruned_step or 0: result.loss},
                )
            elif values is None:
                return
            elif isinstance(values, list):
                trial = create_trial(params=result.vals, distributions=distributions, values=values)
            else:
                trial = create_trial(params=result.vals, distributions=distributions, value=values)
            self.study.add_trial(trial)
        except (KeyError, ValueError) as err:  # a point the space no longer fits: the sampler skips it
            log.warning("trial %s not given to the %s sampler: %s", result.tid, self.algo, err)
