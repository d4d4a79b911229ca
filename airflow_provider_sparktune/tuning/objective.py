"""Resolve the user's objective, check it can travel to Spark executors, and police what it returns.

Trials run on executors, so the objective is cloudpickled with everything it closes over. The
pre-flight here pickles it on the driver first and, when that fails, names the object that cannot
travel instead of surfacing Spark's serializer trace after the first job starts.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sparktune.exceptions import ObjectiveError
from airflow_provider_sparktune.tuning.trial import (
    CURVE_KEY,
    LOSS_METRIC_PREFIX,
    LOSSES_KEY,
    evaluate_with_trial,
    pruned_result,
)

NESTED_SPARK_HINT = (
    "trials run on Spark executors, where the SparkSession and SparkContext do not exist and Spark "
    "cannot start nested jobs (no nested parallelism). Load data with pandas/pyarrow inside the "
    "objective or stage it with `data=`, and use single-machine libraries (scikit-learn, xgboost) there"
)
_SPARK_DRIVER_ONLY_TYPES = ("SparkSession", "SparkContext", "DataFrame", "RDD", "Broadcast")


def resolve_objective(objective: Any) -> Callable[..., Any]:
    """A callable, ``"package.module:function"`` imported on the driver, or a built-in estimator spec."""
    if callable(objective):
        return objective
    if isinstance(objective, Mapping):
        from airflow_provider_sparktune.tuning.estimator import EstimatorObjective

        return EstimatorObjective.from_spec(objective)
    if not isinstance(objective, str):
        raise ObjectiveError(
            f"objective: expected 'package.module:function' or a callable, got {type(objective).__name__}; "
            'or the built-in estimator objective, {"estimator": "sklearn.ensemble....", "target": "label"}'
        )
    module_name, sep, attr_path = objective.strip().partition(":")
    if not sep or not module_name or not attr_path:
        raise ObjectiveError(
            f"objective: {objective!r} is not an import path; write it as 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError) as err:
        raise ObjectiveError(
            f"objective: cannot import module {module_name!r} ({err}); install the package that holds it "
            "on the Airflow worker and the Spark executors"
        ) from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ObjectiveError(
                f"objective: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise ObjectiveError(f"objective: {objective!r} is a {type(target).__name__}, not a callable")
    return target


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _declares(fn: Callable[..., Any], name: str) -> bool:
    """``fn`` has a parameter called ``name`` (``**kwargs`` alone does not count)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class TrialObjective:
    """The function hyperopt evaluates on an executor: the user's objective with its data and kwargs.

    A module-level class, so it pickles by reference and only ``fn``, ``data`` and ``kwargs`` travel.
    """

    fn: Callable[..., Any]
    data: Any = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    pass_data: bool = True
    pass_trial: bool = False  # the objective declares ``trial``: it reports and may be pruned
    directions: Mapping[str, str] | None = None  # a multi-objective run: {loss name: direction}

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        call_kwargs = dict(self.kwargs)
        if self.pass_data:
            call_kwargs["data"] = self.data
        if not self.pass_trial:
            return normalize_result(self._call(params, call_kwargs), self.directions)
        raw, trial, pruned = evaluate_with_trial(
            lambda trial: self._call(params, {**call_kwargs, "trial": trial})
        )
        if pruned:
            return pruned_result(trial)
        result = normalize_result(raw, self.directions)
        if trial.curve:
            result[CURVE_KEY] = list(trial.curve)
        return result

    def _call(self, params: dict[str, Any], call_kwargs: dict[str, Any]) -> Any:
        try:
            return self.fn(params, **call_kwargs)
        except Exception as err:
            if _is_nested_spark_error(err):
                raise ObjectiveError(
                    f"the objective used Spark inside a trial: {NESTED_SPARK_HINT}"
                ) from None
            raise


def build_trial_objective(
    objective: Any,
    *,
    data: Any = None,
    objective_kwargs: Mapping[str, Any] | str | None = None,
    space: Any = None,
    directions: Mapping[str, str] | None = None,
) -> TrialObjective:
    """Resolve, bind and pre-flight the objective: every error here comes before any Spark job.

    ``space`` (compiled) lets the built-in estimator objective check its hyperparameter names.
    """
    from airflow_provider_sparktune.tuning.estimator import EstimatorObjective

    fn = resolve_objective(objective)
    if isinstance(fn, EstimatorObjective):
        fn.check(data, space)
    given: Any = objective_kwargs
    if isinstance(given, str):  # a rendered template
        try:
            given = json.loads(given)
        except json.JSONDecodeError as err:
            raise ObjectiveError(f"objective_kwargs: not valid JSON ({err.msg}); pass a dict") from None
    if not isinstance(given or {}, Mapping):
        raise ObjectiveError(f"objective_kwargs: expected a dict, got {type(given).__name__}")
    kwargs = dict(given or {})
    pass_data = _accepts(fn, "data")
    if data is not None and not pass_data:
        raise ObjectiveError(
            f"objective: {_name(fn)}() takes no `data` argument but data was staged; "
            "add `data=None` to its signature"
        )
    if "data" in kwargs:
        raise ObjectiveError(
            "objective_kwargs.data: `data` is reserved for the staged dataset; rename the key"
        )
    pass_trial = _declares(fn, "trial")
    if "trial" in kwargs and pass_trial:
        raise ObjectiveError(
            "objective_kwargs.trial: `trial` is reserved for the trial handle (report, should_prune); rename the key"
        )
    try:
        inspect.signature(fn).bind(
            {}, **kwargs, **({"data": data} if pass_data else {}), **({"trial": None} if pass_trial else {})
        )
    except TypeError as err:
        raise ObjectiveError(
            f"objective_kwargs: {_name(fn)}() cannot be called with keys {sorted(kwargs)} ({err}); "
            "the objective is called as objective(params, data=..., **objective_kwargs)"
        ) from None
    except ValueError:
        pass  # builtins without a signature: checked when called
    trial_objective = TrialObjective(
        fn=fn, data=data, kwargs=kwargs, pass_data=pass_data, pass_trial=pass_trial, directions=directions
    )
    preflight_pickle(trial_objective)
    return trial_objective


def _in_a_thread_of_its_own(call: Callable[[Any], bytes], value: Any) -> bytes:
    """``call(value)`` in a short-lived thread: the objective's pickle check runs there.

    A broadcast variable that is pickled joins the next Spark job of the pickling thread (PySpark's
    broadcast registry is per thread). Pickled in the caller's thread, a staged broadcast would ride
    along with that thread's next job, long after the run destroyed it ("used after it was
    destroyed"); this thread runs no job and takes its registry with it.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(value)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, name="sparktune-pickle-check")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return bytes(outcome["value"])


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def normalize_result(raw: Any, directions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Turn a float or hyperopt result dict into a checked dict with plain Python numbers.

    A loss that is NaN, infinite, None or not a number raises, so that trial fails with this message
    and the run goes on. With ``directions`` (a multi-objective run) the result holds ``losses``; its
    ``loss`` is the primary (first) one, negated when it is maximized, so lower is better everywhere.
    """
    if directions and not isinstance(raw, Mapping):
        raise ObjectiveError(
            f"objective returned {raw!r:.80}; a run with directions needs {{'losses': {{{', '.join(map(repr, directions))}: ...}}}}"
        )
    if isinstance(raw, Mapping):
        result = dict(raw)
        status = result.setdefault("status", "ok")
        if status not in ("ok", "fail"):
            raise ObjectiveError(f"objective returned status={status!r}; use 'ok' or 'fail'")
        if LOSSES_KEY in result or directions:
            _named_losses(result, directions, status)
        if status == "ok" or "loss" in result:
            result["loss"] = _finite(result.get("loss"), "loss")
        if "loss_variance" in result:
            result["loss_variance"] = _finite(result["loss_variance"], "loss_variance")
        metrics = result.get("metrics")
        if metrics is not None:
            if not isinstance(metrics, Mapping):
                raise ObjectiveError(
                    f"objective returned metrics of type {type(metrics).__name__}; use a dict"
                )
            result["metrics"] = {str(k): _finite(v, f"metrics.{k}") for k, v in metrics.items()}
        return result
    return {"loss": _finite(raw, "loss"), "status": "ok"}


def _named_losses(result: dict[str, Any], directions: Mapping[str, str] | None, status: str) -> None:
    """Check ``losses`` against the run's directions; set ``loss`` and the ``loss.<name>`` metrics."""
    if not directions:
        raise ObjectiveError(
            "objective returned losses, but the run has one loss: pass directions={name: 'minimize' | "
            "'maximize', ...} for a multi-objective run, or return loss"
        )
    losses = result.get(LOSSES_KEY)
    if status != "ok" and losses is None:
        return
    if not isinstance(losses, Mapping) or set(losses) != set(directions):
        got = sorted(losses) if isinstance(losses, Mapping) else losses
        raise ObjectiveError(
            f"objective returned losses {got!r:.120}; the run's directions name {list(directions)}: "
            "return exactly those, as {'losses': {name: number}}"
        )
    checked = {name: _finite(losses[name], f"losses.{name}") for name in directions}
    primary, direction = next(iter(directions.items()))
    result[LOSSES_KEY] = checked
    result["loss"] = checked[primary] if direction == "minimize" else -checked[primary]
    metrics = dict(result.get("metrics") or {})
    metrics.update({f"{LOSS_METRIC_PREFIX}{name}": value for name, value in checked.items()})
    result["metrics"] = metrics


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None:
        raise ObjectiveError(f"objective returned {what}={value!r}; return a finite number")
    if isinstance(value, (str, bytes)):
        raise ObjectiveError(
            f"objective returned {what} of type {type(value).__name__} ({value!r:.80}); return a finite number"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ObjectiveError(
            f"objective returned {what} of type {type(value).__name__} ({value!r:.80}); return a finite number"
        ) from None
    if not math.isfinite(number):
        raise ObjectiveError(f"objective returned {what}={number}; return a finite number")
    return number


def _is_nested_spark_error(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        error_class = getattr(seen, "getCondition", getattr(seen, "getErrorClass", lambda: None))()
        text = str(seen)
        if (
            error_class == "CONTEXT_ONLY_VALID_ON_DRIVER"
            or "SparkContext can only be used on the driver" in text
        ):
            return True
        if "SparkContext should only be created and accessed on the driver" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def preflight_pickle(trial_objective: TrialObjective) -> bytes:
    """Pickle the objective as Spark will; on failure name the object that cannot travel and the fix."""
    _pickle_by_value_when_not_installed(trial_objective.fn)
    return _in_a_thread_of_its_own(_pickle_or_explain, trial_objective)


def _pickle_or_explain(trial_objective: TrialObjective) -> bytes:
    from pyspark import cloudpickle

    try:
        return bytes(cloudpickle.dumps(trial_objective))
    except Exception as err:
        path, culprit, culprit_err = _find_unpicklable(
            trial_objective, "objective", cloudpickle.dumps, depth=0
        )
        kind = f"{type(culprit).__module__}.{type(culprit).__qualname__}"
        reason = culprit_err or err
        message = (
            f"objective cannot be pickled for the Spark executors: {path} is a {kind} "
            f"({type(reason).__name__}: {reason}). "
        )
        if type(culprit).__name__ in _SPARK_DRIVER_ONLY_TYPES:
            message += NESTED_SPARK_HINT
        else:
            message += (
                "Locks, open files, connections, clients and sessions cannot travel to executors: build "
                "them inside the objective function, and pass plain settings through objective_kwargs"
            )
        raise ObjectiveError(message) from None


def _pickle_by_value_when_not_installed(fn: Callable[..., Any]) -> None:
    """Functions from DAG files are not importable on executors: ship their module's code with them.

    "Installed" means the module's file lies in a site-packages folder: a path check, where asking
    ``importlib.metadata`` which distribution holds it reads every installed package's metadata
    (over a second in a fresh task process). Editable installs live outside site-packages and are
    shipped by value, which works wherever they run.
    """
    from pyspark import cloudpickle

    module_name = getattr(fn, "__module__", None) or ""
    module = sys.modules.get(module_name)
    if module is None or module_name == "__main__":
        return
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == __name__.split(".")[0]:  # executors import this package
        return
    path = getattr(module, "__file__", None)
    if path is None or _in_site_packages(path):
        return
    cloudpickle.register_pickle_by_value(module)


def _in_site_packages(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real.startswith(folder + os.sep) for folder in _site_packages())


@functools.cache
def _site_packages() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    folders = {paths["purelib"], paths["platlib"], *site.getsitepackages(), site.getusersitepackages()}
    return tuple(sorted({os.path.realpath(folder) for folder in folders}))


def _children(obj: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(obj, TrialObjective):
        return [(path, obj.fn), (f"{path}_kwargs", obj.kwargs), ("data", obj.data)]
    if isinstance(obj, functools.partial):
        return [(f"{path}.func", obj.func), *((f"{path}.args[{i}]", a) for i, a in enumerate(obj.args))] + [
            (f"{path}.keywords[{k!r}]", v) for k, v in obj.keywords.items()
        ]
    if inspect.ismethod(obj):
        return [(f"{path}.__self__", obj.__self__)]
    if inspect.isfunction(obj):
        code = obj.__code__
        cells = zip(code.co_freevars, obj.__closure__ or (), strict=False)
        found = [(f"{path} closure variable {name!r}", cell.cell_contents) for name, cell in cells]
        found += [(f"{path} global {n!r}", obj.__globals__[n]) for n in code.co_names if n in obj.__globals__]
        found += [(f"{path} default[{i}]", d) for i, d in enumerate(obj.__defaults__ or ())]
        return found
    if isinstance(obj, Mapping):
        return [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    if hasattr(obj, "__dict__") and not inspect.ismodule(obj) and not isinstance(obj, type):
        return [(f"{path}.{k}", v) for k, v in vars(obj).items()]
    return []


def _find_unpicklable(
    obj: Any, path: str, dumps: Callable[[Any], bytes], depth: int
) -> tuple[str, Any, Exception | None]:
    """Depth-first: the deepest reachable object that alone fails to pickle."""
    if depth > 8:
        return path, obj, None
    for child_path, child in _children(obj, path):
        if child is obj:
            continue
        try:
            dumps(child)
        except Exception as err:
            found_path, found, found_err = _find_unpicklable(child, child_path, dumps, depth + 1)
            return found_path, found, found_err or err
    return path, obj, None
