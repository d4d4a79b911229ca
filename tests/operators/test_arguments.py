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
