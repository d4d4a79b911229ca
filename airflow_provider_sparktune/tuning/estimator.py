"""The built-in objective: cross-validate an estimator with the scikit-learn API, built from DAG arguments.

For users who write no Python objective::

    objective={"estimator": "sklearn.ensemble.GradientBoostingClassifier", "target": "label",
               "scoring": "roc_auc", "cv": 3}

Each trial builds the estimator with the trial's hyperparameters (the search space's top-level keys
are constructor arguments), cross-validates it on the staged data and returns the negative mean
score as the loss, with the score's spread and the fit time as metrics. Everything that can be
wrong in the spec (estimator path, target column, hyperparameter names, scorer) fails on the
driver, before the first trial.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sparktune.exceptions import ObjectiveError
from airflow_provider_sparktune.redaction import redact_uri

SPEC_KEYS = ("estimator", "target", "features", "scoring", "cv", "fixed_params")
DEFAULT_CV = 5
_TABULAR = ("parquet", "csv")


def import_estimator(path: str) -> type:
    """``"sklearn.ensemble.GradientBoostingClassifier"`` or ``"pkg.module:Class"`` -> the class."""
    text = str(path).strip()
    module_name, sep, attr = text.partition(":")
    if not sep:
        module_name, _, attr = text.rpartition(".")
    hint = "use the class's import path, e.g. 'sklearn.ensemble.GradientBoostingClassifier'"
    if not module_name or not attr:
        raise ObjectiveError(f"objective.estimator: {path!r} is not an import path; {hint}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except ImportError as err:
        raise ObjectiveError(
            f"objective.estimator: cannot import {module_name!r} ({err}); install the package that holds "
            f"{path!r} on the Airflow worker and the Spark executors, or fix the path"
        ) from None
    except AttributeError:
        raise ObjectiveError(f"objective.estimator: {module_name!r} has no {attr!r}; {hint}") from None
    if not isinstance(target, type) or not callable(getattr(target, "fit", None)):
        raise ObjectiveError(
            f"objective.estimator: {path!r} is not an estimator class with fit(); use a class with the "
            "scikit-learn API (fit/get_params), such as sklearn, xgboost or lightgbm estimators"
        )
    return target


def _constructor_parameters(estimator: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's named parameters, and whether it also takes ``**kwargs``."""
    try:
        parameters = inspect.signature(estimator).parameters
    except (TypeError, ValueError):
        return {}, True
    named = {
        name: p
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def integer_parameters(estimator: type) -> frozenset[str]:
    """Constructor arguments that take integers: int defaults, sklearn's Integral-only constraints, or
    an ``int`` annotation (xgboost)."""
    named, _ = _constructor_parameters(estimator)
    constraints = getattr(estimator, "_parameter_constraints", {}) or {}
    found = set()
    for name, parameter in named.items():
        default = parameter.default
        if type(default) is int:
            found.add(name)
            continue
        kinds = [getattr(c, "type", c) for c in constraints.get(name, ())]
        has_int = any(k is int or k is numbers.Integral for k in kinds)
        has_real = any(
            k in (float, numbers.Real) or getattr(k, "__name__", "") == "RealNotInt" for k in kinds
        )
        if has_int and not has_real:
            found.add(name)
            continue
        annotation = parameter.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
        if default is None and "int" in text and "float" not in text and "Callable" not in text:
            found.add(name)
    return frozenset(found)


def cast_whole_floats(params: Mapping[str, Any], int_names: Iterable[str]) -> dict[str, Any]:
    """``quniform`` gives ``50.0``; an estimator that wants an int gets ``50``."""
    names = set(int_names)
    out = {}
    for key, value in params.items():
        if (
            key in names
            and isinstance(value, numbers.Real)
            and not isinstance(value, (bool, numbers.Integral))
            and float(value).is_integer()
        ):
            value = int(float(value))
        out[key] = value
    return out


def _dataset(data: Any) -> Any:
    from airflow_provider_sparktune.data.staged import StagedData

    return data.value if isinstance(data, StagedData) else data


# A CSV "header" is the first line of whatever file the URI named: shown only when it looks like one.
_COLUMN_NAME = re.compile(r"[A-Za-z_][\w.\- ]{0,63}")


def shown_columns(columns: list[Any], fmt: str) -> str:
    """The columns for an error message, unless they may be a file's contents (a token, a password line).

    A URI from run conf may name any file the worker can read; read as CSV, its first line becomes
    the column names. Names are shown for columnar formats, and for CSV when there are several and
    each looks like a column name.
    """
    names = [str(c) for c in columns]
    if fmt == "csv" and (len(names) < 2 or not all(_COLUMN_NAME.fullmatch(n) for n in names)):
        return f"{len(names)} column(s), names not shown: the file's first line does not look like a header"
    return ", ".join(names[:20])


@dataclass(frozen=True)
class EstimatorObjective:
    """``objective(params, data)`` that cross-validates ``estimator`` on ``data``; pickles by reference."""

    estimator: str
    target: str
    features: tuple[str, ...] | str | None = None
    scoring: str | None = None
    cv: int = DEFAULT_CV
    fixed_params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> EstimatorObjective:
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise ObjectiveError(
                f"objective.{unknown[0]}: unknown key of the built-in estimator objective; use "
                f"{', '.join(SPEC_KEYS)}"
            )
        for key in ("estimator", "target"):
            if not isinstance(spec.get(key), str) or not spec[key].strip():
                raise ObjectiveError(
                    f'objective.{key}: required, a string (e.g. "estimator": '
                    '"sklearn.ensemble.GradientBoostingClassifier", "target": "label")'
                )
        cv = spec.get("cv", DEFAULT_CV)
        if cv is None:
            cv = DEFAULT_CV
        if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
            raise ObjectiveError(f"objective.cv: {cv!r} must be an integer number of folds, at least 2")
        scoring = spec.get("scoring")
        if scoring is not None and not isinstance(scoring, str):
            raise ObjectiveError(f"objective.scoring: {scoring!r} must be a scorer name such as 'roc_auc'")
        fixed = spec.get("fixed_params") or {}
        if not isinstance(fixed, Mapping):
            raise ObjectiveError("objective.fixed_params: must be a dict of constructor arguments")
        features = spec.get("features")
        if features is not None and not isinstance(features, str):
            if not isinstance(features, (list, tuple)) or not all(isinstance(f, str) for f in features):
                raise ObjectiveError(
                    "objective.features: must be a list of column names (or an npz array name)"
                )
            features = tuple(features)
        return cls(
            estimator=spec["estimator"].strip(),
            target=spec["target"],
            features=features,
            scoring=scoring,
            cv=cv,
            fixed_params=dict(fixed),
        )

    # ---- checks on the driver, before any trial -------------------------------------------------

    def check(self, data: Any, space: Any = None) -> None:
        """Fail before the trials: import, scorer, data shape and hyperparameter names."""
        if data is None:
            raise ObjectiveError(
                "objective: the built-in estimator objective trains on data, and none was given; pass data= "
                "(a dataset URI, or the plan a StagedDataSensor returned)"
            )
        estimator = import_estimator(self.estimator)
        self._check_scoring()
        self._check_data(data)
        named, var_kwargs = _constructor_parameters(estimator)
        names = set(self.fixed_params) | set(sample_keys(space))
        unknown = sorted(n for n in names if n not in named)
        if unknown and not var_kwargs:
            raise ObjectiveError(
                f"objective.estimator: {estimator.__name__} does not accept the hyperparameter(s) {unknown} "
                f"(from the search space or fixed_params); use its constructor arguments: "
                f"{', '.join(sorted(named))}"
            )

    def _check_scoring(self) -> None:
        if self.scoring is None:
            return
        try:
            from sklearn.metrics import get_scorer, get_scorer_names
        except ImportError:
            raise ObjectiveError(
                "objective: the built-in estimator objective needs scikit-learn; install "
                "airflow-provider-sparktune[sklearn] on the Airflow worker and the Spark executors"
            ) from None
        try:
            get_scorer(self.scoring)
        except ValueError:
            raise ObjectiveError(
                f"objective.scoring: unknown scorer {self.scoring!r}; use one of "
                f"sklearn.metrics.get_scorer_names() such as {', '.join(sorted(get_scorer_names())[:8])}, ..."
            ) from None

    def _check_data(self, data: Any) -> None:
        from airflow_provider_sparktune.data.staged import StagedData

        if isinstance(data, StagedData):
            where, fmt, columns = repr(redact_uri(data.plan.uri)), data.plan.format, data.columns
        else:
            where, fmt = "data", ("npz" if isinstance(data, Mapping) else "tabular")
            columns = tuple(data) if isinstance(data, Mapping) else tuple(getattr(data, "columns", ()))
        if fmt == "npy":
            raise ObjectiveError(
                f"objective.target: dataset {where} is a single .npy array; the built-in objective needs "
                "named columns (parquet, csv) or named arrays (npz with e.g. X and y)"
            )
        available = list(columns or ())
        if self.target not in available:
            raise ObjectiveError(
                f"objective.target: {'array' if fmt == 'npz' else 'column'} {self.target!r} is not in dataset "
                f"{where} (has: {shown_columns(available, fmt)}); set target to one of them"
            )
        features = self._features(available, fmt)
        missing = [f for f in features if f not in available]
        if missing:
            raise ObjectiveError(
                f"objective.features: {missing} not in dataset {where} (has: {shown_columns(available, fmt)})"
            )

    def _features(self, available: list[str], fmt: str) -> tuple[str, ...]:
        if isinstance(self.features, str):
            return (self.features,)
        if self.features is not None:
            return tuple(self.features)
        others = tuple(c for c in available if c != self.target)
        if fmt == "npz" and len(others) != 1:
            raise ObjectiveError(
                f"objective.features: the npz holds arrays {others} besides the target; name the features array"
            )
        return others

    # ---- one trial, on an executor --------------------------------------------------------------

    def __call__(self, params: dict[str, Any], data: Any = None, trial: Any = None) -> dict[str, Any]:
        """Cross-validate fold by fold; after each fold the running mean loss goes to ``trial.report``,
        so a pruner can stop a hopeless trial before its last fold."""
        import time

        import numpy as np
        from sklearn.base import clone, is_classifier
        from sklearn.metrics import check_scoring
        from sklearn.model_selection import check_cv

        from airflow_provider_sparktune.exceptions import TrialPruned

        estimator_cls = import_estimator(self.estimator)
        kwargs = cast_whole_floats({**self.fixed_params, **params}, integer_parameters(estimator_cls))
        X, y = self._xy(_dataset(data))
        estimator = estimator_cls(**kwargs)
        scorer = check_scoring(estimator, scoring=self.scoring)
        splitter = check_cv(self.cv, y, classifier=is_classifier(estimator))
        last_fold = splitter.get_n_splits(X, y) - 1
        test, fit_times, score_times = [], [], []
        for fold, (train, held_out) in enumerate(splitter.split(X, y)):
            model = clone(estimator)
            started = time.perf_counter()
            model.fit(_rows(X, train), _rows(y, train))
            fit_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            test.append(float(scorer(model, _rows(X, held_out), _rows(y, held_out))))
            score_times.append(time.perf_counter() - started)
            if trial is not None:
                trial.report(-float(np.mean(test)), fold)
                if fold < last_fold and trial.should_prune():  # after the last fold the work is done
                    raise TrialPruned(f"pruned after fold {fold}")
        scores = np.asarray(test, dtype=float)
        return {
            "loss": -float(scores.mean()),
            "loss_variance": float(scores.var()),
            "status": "ok",
            "metrics": {
                "cv_score_mean": float(scores.mean()),
                "cv_score_std": float(scores.std()),
                "fit_time_s": float(np.mean(fit_times)),
                "score_time_s": float(np.mean(score_times)),
            },
        }

    def _xy(self, dataset: Any) -> tuple[Any, Any]:
        if isinstance(dataset, Mapping):  # npz: named arrays
            features = self._features([str(k) for k in dataset], "npz")
            return dataset[features[0]], dataset[self.target]
        features = self._features(list(dataset.columns), "tabular")
        return dataset[list(features)], dataset[self.target]


def _rows(table: Any, index: Any) -> Any:
    """Rows of a pandas object (by position) or an array."""
    return table.iloc[index] if hasattr(table, "iloc") else table[index]


def sample_keys(space: Any, samples: int = 10) -> set[str]:
    """Top-level keys of the points a compiled space yields (a few samples cover conditional branches)."""
    if space is None:
        return set()
    import numpy as np
    from hyperopt.pyll import stochastic

    rng = np.random.default_rng(0)
    keys: set[str] = set()
    for _ in range(samples):
        point = stochastic.sample(space, rng=rng)
        if not isinstance(point, Mapping):
            raise ObjectiveError(
                "search_space: the built-in estimator objective needs a dict of constructor arguments at the "
                f"top level, got a {type(point).__name__}"
            )
        keys.update(str(k) for k in point)
    return keys
