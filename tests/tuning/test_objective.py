"""Unit tests for resolving, binding, pickling and policing the user's objective (no Spark session)."""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark import cloudpickle
from pyspark.errors import PySparkRuntimeError

from airflow_provider_sparktune.exceptions import ObjectiveError, SparktuneError
from airflow_provider_sparktune.tuning.objective import (
    NESTED_SPARK_HINT,
    TrialObjective,
    build_trial_objective,
    normalize_result,
    preflight_pickle,
    resolve_objective,
)

pytestmark = pytest.mark.unit

GLOBAL_LOCK = threading.RLock()


def objective_with_data(params: dict[str, Any], data: Any = None, scale: float = 1.0) -> float:
    return (params["x"] + (data or 0)) * scale


def objective_no_data(params: dict[str, Any], scale: float = 1.0) -> float:
    return params["x"] * scale


def objective_var_kwargs(params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {"loss": params["x"], "metrics": {"n_kwargs": len(kwargs), "has_data": int("data" in kwargs)}}


def objective_numpy(params: dict[str, Any]) -> Any:
    return np.float32(params["x"])


def objective_using_global_lock(params: dict[str, Any]) -> float:
    with GLOBAL_LOCK:
        return params["x"]


def objective_with_lock_kwarg(params: dict[str, Any], lock: Any = None) -> float:
    return params["x"]


class SparkSession:
    """Stands in for pyspark's SparkSession: same class name, refuses to pickle."""

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle a SparkSession")


# --------------------------------------------------------------------------------------------------
# resolve_objective
# --------------------------------------------------------------------------------------------------


def test_resolve_callable_passthrough() -> None:
    assert resolve_objective(objective_no_data) is objective_no_data
    fn = functools.partial(objective_no_data, scale=2.0)
    assert resolve_objective(fn) is fn


def test_resolve_import_path() -> None:
    assert resolve_objective("os.path:join") is os.path.join


def test_resolve_import_path_with_dotted_attribute_and_spaces() -> None:
    assert resolve_objective("  os:path.join ") is os.path.join


def test_resolve_import_path_of_this_module() -> None:
    assert resolve_objective(f"{__name__}:objective_no_data") is objective_no_data


@pytest.mark.parametrize(
    ("objective", "fragments"),
    [
        pytest.param(
            "os.path.join",
            ["objective: 'os.path.join' is not an import path", "write it as 'package.module:function'"],
            id="no-colon",
        ),
        pytest.param(":join", ["objective: ':join' is not an import path"], id="empty-module"),
        pytest.param("os.path:", ["objective: 'os.path:' is not an import path"], id="empty-attribute"),
        pytest.param(
            "no_such_module_sparktune_xyz:fn",
            ["objective: cannot import module 'no_such_module_sparktune_xyz'", "install the package"],
            id="missing-module",
        ),
        pytest.param(
            "os.path:no_such_function",
            ["objective: module 'os.path' has no attribute 'no_such_function'"],
            id="missing-attribute",
        ),
        pytest.param(
            "os:path.no_such_function",
            ["objective: module 'os' has no attribute 'path.no_such_function'"],
            id="missing-nested-attribute",
        ),
        pytest.param("os:sep", ["objective: 'os:sep' is a str, not a callable"], id="non-callable"),
        pytest.param(
            42,
            ["objective: expected 'package.module:function' or a callable, got int"],
            id="wrong-type-int",
        ),
        pytest.param(None, ["objective: expected", "got NoneType"], id="wrong-type-none"),
    ],
)
def test_resolve_objective_errors(objective: Any, fragments: list[str]) -> None:
    with pytest.raises(ObjectiveError) as exc:
        resolve_objective(objective)
    message = str(exc.value)
    for fragment in fragments:
        assert fragment in message
    assert isinstance(exc.value, SparktuneError)


def test_resolve_relative_module_raises_objective_error() -> None:
    with pytest.raises(ObjectiveError, match="objective"):
        resolve_objective(".tasks:train")


# --------------------------------------------------------------------------------------------------
# build_trial_objective
# --------------------------------------------------------------------------------------------------


def test_build_passes_kwargs() -> None:
    trial = build_trial_objective(objective_no_data, objective_kwargs={"scale": 3.0})
    assert trial.kwargs == {"scale": 3.0}
    assert trial.pass_data is False
    assert trial({"x": 2}) == {"loss": 6.0, "status": "ok"}


def test_build_passes_data() -> None:
    trial = build_trial_objective(objective_with_data, data=10, objective_kwargs={"scale": 2})
    assert trial.pass_data is True
    assert trial.data == 10
    assert trial({"x": 1}) == {"loss": 22.0, "status": "ok"}


def test_build_with_data_parameter_and_no_data() -> None:
    trial = build_trial_objective(objective_with_data)
    assert trial.pass_data is True
    assert trial.data is None
    assert trial({"x": 4}) == {"loss": 4.0, "status": "ok"}


def test_build_without_data_parameter_and_no_data() -> None:
    trial = build_trial_objective(objective_no_data)
    assert trial.pass_data is False
    assert trial({"x": 5}) == {"loss": 5.0, "status": "ok"}


def test_build_var_kwargs_objective_receives_data() -> None:
    trial = build_trial_objective(objective_var_kwargs, data=[1, 2], objective_kwargs={"a": 1})
    assert trial.pass_data is True
    result = trial({"x": 1})
    assert result["metrics"] == {"n_kwargs": 2.0, "has_data": 1.0}


def test_build_from_import_path() -> None:
    trial = build_trial_objective(f"{__name__}:objective_no_data", objective_kwargs={"scale": 0.5})
    assert trial.fn is objective_no_data
    assert trial({"x": 3}) == {"loss": 1.5, "status": "ok"}


def test_build_accepts_json_string_kwargs() -> None:
    trial = build_trial_objective(objective_no_data, objective_kwargs='{"scale": 4}')
    assert trial.kwargs == {"scale": 4}
    assert trial({"x": 1}) == {"loss": 4.0, "status": "ok"}


def test_build_unknown_kwargs_names_objective_kwargs() -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective_no_data, objective_kwargs={"scale": 1, "depth": 3})
    message = str(exc.value)
    assert message.startswith("objective_kwargs: objective_no_data() cannot be called with keys")
    assert "['depth', 'scale']" in message
    assert "objective(params, data=..., **objective_kwargs)" in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        pytest.param("{scale: 1}", "objective_kwargs: not valid JSON", id="invalid-json"),
        pytest.param("[1, 2]", "objective_kwargs: expected a dict, got list", id="json-list"),
        pytest.param(["scale"], "objective_kwargs: expected a dict, got list", id="python-list"),
        pytest.param(3, "objective_kwargs: expected a dict, got int", id="int"),
    ],
)
def test_build_rejects_bad_kwargs_container(kwargs: Any, fragment: str) -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective_no_data, objective_kwargs=kwargs)
    assert fragment in str(exc.value)


def test_build_rejects_reserved_data_kwarg() -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective_with_data, objective_kwargs={"data": [1]})
    message = str(exc.value)
    assert message.startswith("objective_kwargs.data:")
    assert "reserved for the staged dataset; rename the key" in message


def test_build_rejects_data_for_objective_without_data_parameter() -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective_no_data, data={"rows": 3})
    message = str(exc.value)
    assert "objective: objective_no_data() takes no `data` argument" in message
    assert "add `data=None` to its signature" in message


def test_built_trial_objective_normalizes_results() -> None:
    trial = build_trial_objective(objective_numpy)
    result = trial({"x": 0.25})
    assert result == {"loss": 0.25, "status": "ok"}
    assert type(result["loss"]) is float


def test_trial_objective_does_not_mutate_kwargs() -> None:
    trial = TrialObjective(fn=objective_with_data, data=1, kwargs={"scale": 2.0})
    assert trial({"x": 1}) == {"loss": 4.0, "status": "ok"}
    assert dict(trial.kwargs) == {"scale": 2.0}


def test_trial_objective_surfaces_bad_loss() -> None:
    trial = build_trial_objective(lambda params: float("nan"))
    with pytest.raises(ObjectiveError, match="loss=nan"):
        trial({})


# --------------------------------------------------------------------------------------------------
# normalize_result
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "loss"),
    [
        pytest.param(0.5, 0.5, id="float"),
        pytest.param(3, 3.0, id="int"),
        pytest.param(-2, -2.0, id="negative-int"),
        pytest.param(np.float64(0.125), 0.125, id="numpy-float64"),
        pytest.param(np.float32(0.25), 0.25, id="numpy-float32"),
        pytest.param(np.int64(7), 7.0, id="numpy-int64"),
    ],
)
def test_normalize_number(raw: Any, loss: float) -> None:
    result = normalize_result(raw)
    assert result == {"loss": loss, "status": "ok"}
    assert type(result["loss"]) is float


def test_normalize_dict_with_metrics() -> None:
    raw = {
        "loss": np.float64(0.1),
        "metrics": {"acc": np.float32(0.5), "n": 3, 7: np.int64(2)},
        "loss_variance": np.float32(0.25),
        "extra": "kept",
    }
    result = normalize_result(raw)
    assert result == {
        "loss": 0.1,
        "status": "ok",
        "metrics": {"acc": 0.5, "n": 3.0, "7": 2.0},
        "loss_variance": 0.25,
        "extra": "kept",
    }
    assert type(result["loss"]) is float
    assert all(type(v) is float for v in result["metrics"].values())
    assert type(result["loss_variance"]) is float
    assert "status" not in raw  # the caller's dict is not mutated


def test_normalize_fail_status_passes_through() -> None:
    raw = {"status": "fail", "failure": "diverged"}
    assert normalize_result(raw) == {"status": "fail", "failure": "diverged"}


def test_normalize_fail_status_with_loss_still_checks_loss() -> None:
    assert normalize_result({"status": "fail", "loss": np.int64(1)}) == {"status": "fail", "loss": 1.0}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param(float("nan"), "objective returned loss=nan; return a finite number", id="nan"),
        pytest.param(float("inf"), "objective returned loss=inf; return a finite number", id="inf"),
        pytest.param(-math.inf, "objective returned loss=-inf", id="minus-inf"),
        pytest.param(np.float64("nan"), "objective returned loss=nan", id="numpy-nan"),
        pytest.param(None, "objective returned loss=None; return a finite number", id="none"),
        pytest.param(
            "abc", "objective returned loss of type str ('abc'); return a finite number", id="string"
        ),
        pytest.param(True, "objective returned loss=True; return a finite number", id="bool"),
        pytest.param([0.1], "objective returned loss of type list", id="list"),
        pytest.param({"loss": None}, "objective returned loss=None", id="dict-loss-none"),
        pytest.param({"status": "ok"}, "objective returned loss=None", id="dict-ok-without-loss"),
        pytest.param({"loss": float("inf")}, "objective returned loss=inf", id="dict-loss-inf"),
        pytest.param(
            {"loss": 1.0, "metrics": [0.9]},
            "objective returned metrics of type list; use a dict",
            id="metrics-not-a-dict",
        ),
        pytest.param(
            {"loss": 1.0, "metrics": {"acc": float("nan")}},
            "objective returned metrics.acc=nan; return a finite number",
            id="metric-nan",
        ),
        pytest.param(
            {"loss": 1.0, "metrics": {"name": "rf"}},
            "objective returned metrics.name of type str",
            id="metric-string",
        ),
        pytest.param(
            {"loss": 1.0, "status": "okay"},
            "objective returned status='okay'; use 'ok' or 'fail'",
            id="unknown-status",
        ),
        pytest.param(
            {"loss": 1.0, "loss_variance": math.inf},
            "objective returned loss_variance=inf",
            id="loss-variance-inf",
        ),
    ],
)
def test_normalize_rejects(raw: Any, fragment: str) -> None:
    with pytest.raises(ObjectiveError) as exc:
        normalize_result(raw)
    assert fragment in str(exc.value)


def test_normalize_rejects_numeric_string() -> None:
    with pytest.raises(ObjectiveError):
        normalize_result("0.5")


# --------------------------------------------------------------------------------------------------
# pickle pre-flight
# --------------------------------------------------------------------------------------------------


def test_preflight_names_closure_lock() -> None:
    lock = threading.RLock()

    def objective(params: dict[str, Any]) -> float:
        with lock:
            return 0.0

    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective)
    message = str(exc.value)
    assert "objective cannot be pickled for the Spark executors" in message
    assert "closure variable 'lock'" in message
    assert "_thread.RLock" in message
    assert "inside the objective" in message


def test_preflight_names_module_global_lock() -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective_using_global_lock)
    message = str(exc.value)
    assert "global 'GLOBAL_LOCK'" in message
    assert "_thread.RLock" in message
    assert "inside the objective" in message


def test_preflight_names_objective_kwargs_lock() -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective_with_lock_kwarg, objective_kwargs={"lock": threading.RLock()})
    message = str(exc.value)
    assert "objective_kwargs['lock'] is a _thread.RLock" in message
    assert "pass plain settings through objective_kwargs" in message


def test_preflight_names_unpicklable_data() -> None:
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective_with_data, data=threading.Lock())
    message = str(exc.value)
    assert "data is a _thread.lock" in message


def test_preflight_names_partial_keyword() -> None:
    fn = functools.partial(objective_with_lock_kwarg, lock=threading.RLock())
    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(fn)
    assert "objective.keywords['lock'] is a _thread.RLock" in str(exc.value)


def test_preflight_driver_only_object_gets_nested_spark_hint() -> None:
    spark = SparkSession()

    def objective(params: dict[str, Any]) -> float:
        return float(spark is not None)

    with pytest.raises(ObjectiveError) as exc:
        build_trial_objective(objective)
    message = str(exc.value)
    assert "closure variable 'spark'" in message
    assert "SparkSession" in message
    assert "no nested parallelism" in message


def test_preflight_plain_function_round_trips() -> None:
    trial = TrialObjective(fn=objective_no_data, kwargs={"scale": 2.0}, pass_data=False)
    payload = preflight_pickle(trial)
    assert isinstance(payload, bytes)
    assert payload
    restored = cloudpickle.loads(payload)
    assert callable(restored)
    assert restored({"x": 3}) == trial({"x": 3}) == {"loss": 6.0, "status": "ok"}


def test_preflight_closure_round_trips() -> None:
    offset = 10.0

    def objective(params: dict[str, Any], data: Any = None) -> float:
        return params["x"] + offset + len(data)

    trial = build_trial_objective(objective, data=[1, 2, 3])
    restored = cloudpickle.loads(preflight_pickle(trial))
    assert restored({"x": 1.0}) == {"loss": 14.0, "status": "ok"}


def _import_from(folder: Path, name: str, source: str) -> Any:
    (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def test_a_dag_file_function_travels_by_value_and_installed_ones_by_reference(tmp_path: Path) -> None:
    from airflow_provider_sparktune.tuning.estimator import EstimatorObjective

    dag_module = _import_from(tmp_path, "sparktune_dag_file_objective", "def loss(params):\n    return 1.0\n")
    try:
        build_trial_objective(dag_module.loss)
        build_trial_objective(np.linalg.norm)
        by_value = cloudpickle.list_registry_pickle_by_value()
        assert "sparktune_dag_file_objective" in by_value  # not importable on executors: its code travels
        assert np.linalg.norm.__module__ not in by_value  # installed: imported there
        assert EstimatorObjective.__module__ not in by_value  # this package: executors import it
        del sys.modules["sparktune_dag_file_objective"]  # gone, as on an executor: the pickle still loads
        restored = cloudpickle.loads(cloudpickle.dumps(dag_module.loss))
        assert restored({}) == 1.0
    finally:
        if dag_module.__name__ in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.unregister_pickle_by_value(dag_module)


# --------------------------------------------------------------------------------------------------
# nested Spark detection
# --------------------------------------------------------------------------------------------------


def objective_touching_spark(params: dict[str, Any]) -> float:
    raise PySparkRuntimeError(errorClass="CONTEXT_ONLY_VALID_ON_DRIVER", messageParameters={})


def objective_wrapping_spark_error(params: dict[str, Any]) -> float:
    try:
        objective_touching_spark(params)
    except PySparkRuntimeError as err:
        raise RuntimeError("feature loading failed") from err
    return 0.0


def objective_creating_context(params: dict[str, Any]) -> float:
    raise RuntimeError("SparkContext should only be created and accessed on the driver.")


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(objective_touching_spark, id="error-class"),
        pytest.param(objective_wrapping_spark_error, id="chained-cause"),
        pytest.param(objective_creating_context, id="message-text"),
    ],
)
def test_nested_spark_error_becomes_objective_error(fn: Any) -> None:
    trial = TrialObjective(fn=fn, pass_data=False)
    with pytest.raises(ObjectiveError) as exc:
        trial({"x": 1})
    message = str(exc.value)
    assert "nested parallelism" in message
    assert message == f"the objective used Spark inside a trial: {NESTED_SPARK_HINT}"


def test_ordinary_error_propagates_unchanged() -> None:
    err = ValueError("the feature table is empty")

    def objective(params: dict[str, Any]) -> float:
        raise err

    trial = TrialObjective(fn=objective, pass_data=False)
    with pytest.raises(ValueError) as exc:
        trial({"x": 1})
    assert exc.value is err
    assert not isinstance(exc.value, ObjectiveError)


@pytest.mark.integration
def test_checking_an_objective_that_holds_a_broadcast_leaves_later_jobs_of_the_thread_alone(
    spark: Any,
) -> None:
    """A pickled broadcast variable joins the pickling thread's next Spark job (PySpark's registry)."""
    sc = spark.sparkContext
    staged = sc.broadcast([1, 2, 3])
    try:
        build_trial_objective(lambda params, data=None: float(len(data.value)), data=staged)
    finally:
        staged.destroy()  # the run is over: staging releases the broadcast
    assert sc.parallelize(range(3), 1).map(lambda x: x + 1).count() == 3  # not "used after destroyed"
