from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.operators import arguments
from airflow_provider_sparktune.tuning.session import check_tuning_key


@pytest.mark.unit
def test_rendered_text_is_converted() -> None:
    assert arguments.coerce("max_evals", "50", int) == 50
    assert arguments.coerce("timeout", " None ", float) is None
    assert arguments.flag("warm_start", "True") is True
    assert arguments.flag("warm_start", "", allow_none=True) is None
    assert arguments.mapping("spark_conf", '{"spark.x": "1"}') == {"spark.x": "1"}
    assert arguments.positive_number("t", "2.5") == 2.5
    assert check_tuning_key("team.model:v2") == "team.model:v2"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("check", "value", "field"),
    [
        (lambda v: arguments.coerce("max_evals", v, int), "ten", "max_evals"),
        (lambda v: arguments.flag("warm_start", v), "maybe", "warm_start"),
        (lambda v: arguments.mapping("spark_conf", v), "[1, 2]", "spark_conf"),
        (lambda v: arguments.mapping("spark_conf", v), "{oops", "spark_conf"),
        (lambda v: arguments.positive_number("spark_connect_timeout", v), -3, "spark_connect_timeout"),
        (lambda v: arguments.name("mlflow_experiment", v), 42, "mlflow_experiment"),
        (lambda v: check_tuning_key(v), "x' or '1'='1", "tuning_key"),
    ],
)
def test_bad_values_name_the_argument(check: Any, value: Any, field: str) -> None:
    with pytest.raises(TuningConfigError, match=rf"^{field}: "):
        check(value)


@pytest.mark.unit
def test_each_converter_keeps_what_fits_and_refuses_the_rest() -> None:
    """The edges of every converter, one assertion each (each was a surviving mutant)."""
    assert arguments.coerce("max_evals", "auto", int) == "auto"  # "auto" is not text to convert
    assert arguments.flag("warm_start", True) is True and arguments.flag("warm_start", False) is False
    assert arguments.flag("warm_start", " Off ") is False and arguments.flag("warm_start", "no") is False
    with pytest.raises(TuningConfigError, match=r"^warm_start: None is not a boolean"):
        arguments.flag("warm_start", None)  # None only where allowed
    with pytest.raises(TuningConfigError, match=r"^warm_start: '' is not a boolean"):
        arguments.flag("warm_start", "")
    with pytest.raises(TuningConfigError, match=r"^warm_start: 'maybe' is not a boolean"):
        arguments.flag("warm_start", "maybe", allow_none=True)
    assert arguments.positive_number("spark_connect_timeout", None) is None
    assert arguments.positive_number("t", 0.5) == 0.5
    for bad in (0, True, float("inf"), "nan"):
        with pytest.raises(TuningConfigError, match=r"^t: .* must be a positive number of seconds"):
            arguments.positive_number("t", bad)
    with pytest.raises(TuningConfigError, match=r"^spark_connect_timeout: rendered to 'soon'"):
        arguments.positive_number("spark_connect_timeout", "soon")
    assert arguments.mapping("spark_conf", "   ") is None
    with pytest.raises(TuningConfigError, match=r"^spark_conf: dict given; use a dict with string keys"):
        arguments.mapping("spark_conf", {1: "a"})
    with pytest.raises(TuningConfigError, match=r"^spark_conf: list given"):
        arguments.mapping("spark_conf", [1])
    assert arguments.name("mlflow_experiment", None) is None and arguments.name("f", "ok") == "ok"
    with pytest.raises(TuningConfigError, match=r"^f: '  ' must be a non-empty string"):
        arguments.name("f", "  ")
