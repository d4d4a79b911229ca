"""Unit tests for the XCom contract: json_native conversion and the to_xcom shape."""

from __future__ import annotations

import json
import math
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pytest

from airflow_provider_sparktune.operators.xcom import to_xcom, with_comparison
from airflow_provider_sparktune.tuning.records import TrialRecord, TuningResult
from airflow_provider_sparktune.tuning.spec import TuningSpec
from airflow_provider_sparktune.values import json_native

pytestmark = pytest.mark.unit

JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def assert_plain_json(value: Any) -> None:
    """Every node is exactly a builtin JSON type (no subclasses such as numpy.float64)."""
    assert type(value) in JSON_TYPES, f"{value!r} is a {type(value).__module__}.{type(value).__name__}"
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)


# --------------------------------------------------------------------------------------------------
# json_native
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "expected_type"),
    [
        pytest.param(np.int64(3), 3, int, id="numpy-int64"),
        pytest.param(np.int32(-4), -4, int, id="numpy-int32"),
        pytest.param(np.uint8(255), 255, int, id="numpy-uint8"),
        pytest.param(np.float32(0.5), 0.5, float, id="numpy-float32"),
        pytest.param(np.float16(1.5), 1.5, float, id="numpy-float16"),
        pytest.param(np.bool_(True), True, bool, id="numpy-bool-true"),
        pytest.param(np.bool_(False), False, bool, id="numpy-bool-false"),
        pytest.param(np.array(2.5), 2.5, float, id="numpy-0d-array"),
        pytest.param(7, 7, int, id="int"),
        pytest.param(True, True, bool, id="bool-stays-bool"),
        pytest.param(0.25, 0.25, float, id="float"),
        pytest.param("s", "s", str, id="str"),
    ],
)
def test_json_native_scalars(value: Any, expected: Any, expected_type: type) -> None:
    out = json_native(value)
    assert out == expected
    assert type(out) is expected_type


def test_json_native_none() -> None:
    assert json_native(None) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(-math.inf, id="minus-inf"),
        pytest.param(np.float64("nan"), id="numpy-float64-nan"),
        pytest.param(np.float32("inf"), id="numpy-float32-inf"),
        pytest.param(np.array(np.nan), id="numpy-0d-nan"),
    ],
)
def test_json_native_non_finite_becomes_none(value: Any) -> None:
    assert json_native(value) is None


def test_json_native_numpy_arrays() -> None:
    out = json_native(np.array([[1, 2], [3, 4]], dtype=np.int64))
    assert out == [[1, 2], [3, 4]]
    assert all(type(v) is int for row in out for v in row)
    assert json_native(np.array([0.5, np.nan, np.inf])) == [0.5, None, None]
    assert json_native(np.array([True, False])) == [True, False]
    assert json_native(np.array([])) == []


def test_json_native_tuples_and_sets() -> None:
    assert json_native((1, (2, 3))) == [1, [2, 3]]
    assert sorted(json_native({3, 1, 2})) == [1, 2, 3]
    assert sorted(json_native(frozenset({"a", "b"}))) == ["a", "b"]
    assert isinstance(json_native({1}), list)


def test_json_native_nested_dict_with_non_str_keys() -> None:
    value = {
        1: {"a": (np.int64(1), float("nan"))},
        None: np.bool_(False),
        (1, 2): [np.float32(0.5), {np.int64(3): {"deep": np.array([1, 2])}}],
        2.5: "x",
    }
    out = json_native(value)
    assert out == {
        "1": {"a": [1, None]},
        "None": False,
        "(1, 2)": [0.5, {"3": {"deep": [1, 2]}}],
        "2.5": "x",
    }
    assert_plain_json(out)
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_json_native_unknown_objects_become_strings() -> None:
    assert json_native(PurePosixPath("/data/train.parquet")) == "/data/train.parquet"
    assert json_native({"p": PurePosixPath("a/b")}) == {"p": "a/b"}


def test_json_native_output_passes_strict_json_dumps() -> None:
    value = {
        "ints": [np.int8(1), np.int64(2)],
        "floats": (np.float32(0.5), np.float64(np.inf), float("nan")),
        "bools": {np.bool_(True)},
        "array": np.linspace(0, 1, 3),
        "nested": {"k": [{"v": np.float16("nan")}]},
    }
    text = json.dumps(json_native(value), allow_nan=False)
    assert json.loads(text) == {
        "ints": [1, 2],
        "floats": [0.5, None, None],
        "bools": [True],
        "array": [0.0, 0.5, 1.0],
        "nested": {"k": [{"v": None}]},
    }


def test_json_native_does_not_mutate_input() -> None:
    value = {"a": (1, 2), "b": [np.int64(1)]}
    json_native(value)
    assert value["a"] == (1, 2)
    assert type(value["b"][0]) is np.int64


def test_json_native_numpy_float64_becomes_plain_float() -> None:
    assert type(json_native(np.float64(0.5))) is float


# --------------------------------------------------------------------------------------------------
# to_xcom
# --------------------------------------------------------------------------------------------------

XCOM_KEYS = {
    "best_params",
    "best_loss",
    "argmin",
    "trials",
    "stopped_reason",
    "mlflow",
    "staging",
    "duration_s",
    "efficiency",
    "trial_overhead_s",
    "startup_s",
    "drain_s",
}


def make_result(**overrides: Any) -> TuningResult:
    record = TrialRecord(
        tid=0,
        status="ok",
        loss=0.25,
        params={"model": {"name": "model a", "x": 1}},
        vals={"my_choice": [0], "model_a_x": [0]},
        metrics={"acc": 0.9},
        error=None,
        started_at=100.0,
        finished_at=101.5,
    )
    fields: dict[str, Any] = {
        "best_params": {
            "model": {"name": "model a", "x": np.int64(1)},
            "lr": np.float32(0.5),
            "layers": (np.int64(16), np.int64(32)),
            "flag": np.bool_(True),
        },
        "best_loss": np.float32(0.25),
        "argmin": {"my_choice": np.int64(0), "model_a_x": np.int64(0), "lr": np.float32(0.5)},
        "trials_total": np.int64(10),
        "trials_ok": 8,
        "trials_failed": np.int64(1),
        "trials_cancelled": 1,
        "stopped_reason": "max_evals",
        "duration_s": 12.34567,
        "efficiency": np.float64(0.912345),
        "trial_overhead_s": 0.0456789,
        "startup_s": np.float64(3.14159),
        "spec": TuningSpec(max_evals=10, parallelism=2, seed=1),
        "records": (record,),
    }
    fields.update(overrides)
    return TuningResult(**fields)


def test_to_xcom_exact_shape() -> None:
    out = to_xcom(make_result())
    assert set(out) == XCOM_KEYS
    assert set(out["trials"]) == {"total", "ok", "failed", "cancelled", "pruned", "lost"}
    assert set(out["mlflow"]) == {"tracking_uri", "experiment_id", "run_id"}
    assert out["staging"] is None


def test_to_xcom_values_are_json_native() -> None:
    out = to_xcom(make_result())
    assert out["best_params"] == {
        "model": {"name": "model a", "x": 1},
        "lr": 0.5,
        "layers": [16, 32],
        "flag": True,
    }
    assert out["best_loss"] == 0.25
    assert out["argmin"] == {"my_choice": 0, "model_a_x": 0, "lr": 0.5}
    assert out["trials"] == {"total": 10, "ok": 8, "failed": 1, "cancelled": 1, "pruned": 0, "lost": 0}
    assert out["stopped_reason"] == "max_evals"
    assert out["mlflow"] == {"tracking_uri": "", "experiment_id": "", "run_id": ""}
    assert out["duration_s"] == 12.346
    assert out["efficiency"] == 0.9123
    assert type(out["efficiency"]) is float
    assert out["trial_overhead_s"] == 0.0457
    assert out["startup_s"] == 3.142 and type(out["startup_s"]) is float
    assert out["drain_s"] is None  # not tracked in MLflow: nothing drained
    assert_plain_json(out)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out


def test_to_xcom_counts_lost_attempts_apart_from_failed_trials() -> None:
    out = to_xcom(make_result(trials_lost=3))
    assert out["trials"] == {"total": 10, "ok": 8, "failed": 1, "cancelled": 1, "pruned": 0, "lost": 3}
    assert type(out["trials"]["lost"]) is int


def test_to_xcom_with_mlflow_and_staging() -> None:
    mlflow = {"tracking_uri": "file:///tmp/mlruns", "experiment_id": "3", "run_id": "abc123"}
    staging = {"rows": np.int64(5000), "bytes": 1 << 20, "mode": "broadcast", "ratio": float("nan")}
    out = to_xcom(make_result(), mlflow=mlflow, staging=staging)
    assert out["mlflow"] == mlflow
    assert out["staging"] == {"rows": 5000, "bytes": 1 << 20, "mode": "broadcast", "ratio": None}
    assert set(out) == XCOM_KEYS
    json.dumps(out, allow_nan=False)


def test_to_xcom_empty_staging_is_a_dict_not_none() -> None:
    assert to_xcom(make_result(), staging={})["staging"] == {}


def test_to_xcom_non_finite_best_loss_becomes_null() -> None:
    out = to_xcom(make_result(best_loss=float("nan")))
    assert out["best_loss"] is None
    assert json.loads(json.dumps(out, allow_nan=False))["best_loss"] is None


def test_to_xcom_does_not_include_records_or_spec() -> None:
    out = to_xcom(make_result())
    assert "records" not in out
    assert "spec" not in out


def test_to_xcom_numpy_float64_argmin_is_plain_float() -> None:
    out = to_xcom(make_result(argmin={"lr": [np.float64(0.68)]}))
    assert type(out["argmin"]["lr"][0]) is float


def test_with_comparison_adds_the_nightly_fields_and_strips_credentials_from_uris() -> None:
    mlflow = {"tracking_uri": "https://user:secret@mlflow:5000", "experiment_id": "3", "run_id": "abc"}
    staging = {"uri": "s3://key:secret@bucket/features/", "mode": "reload"}
    out = with_comparison(
        to_xcom(make_result(), mlflow=mlflow, staging=staging),
        tuning_key="d.t",
        improved=True,
        previous_best_loss=np.float64(0.5),
    )
    assert set(out) == XCOM_KEYS | {"tuning_key", "improved", "previous_best_loss"}
    assert out["mlflow"] == {"tracking_uri": "https://mlflow:5000", "experiment_id": "3", "run_id": "abc"}
    assert out["staging"] == {"uri": "s3://bucket/features/", "mode": "reload"}
    assert (out["tuning_key"], out["improved"], out["previous_best_loss"]) == ("d.t", True, 0.5)
    assert "secret" not in json.dumps(out)
    assert_plain_json(out)
