from __future__ import annotations

import pytest

from airflow_provider_sparktune.links import mlflow_run_url


@pytest.mark.unit
def test_link_points_at_the_parent_run_on_a_server() -> None:
    mlflow = {"tracking_uri": "http://127.0.0.1:5000/", "experiment_id": "3", "run_id": "abc"}
    assert mlflow_run_url(mlflow) == "http://127.0.0.1:5000/#/experiments/3/runs/abc"


@pytest.mark.unit
@pytest.mark.parametrize(
    "mlflow",
    [None, {}, {"tracking_uri": "sqlite:////tmp/mlflow.db", "experiment_id": "1", "run_id": "abc"}],
)
def test_no_link_without_a_server(mlflow: dict[str, str] | None) -> None:
    assert mlflow_run_url(mlflow) == ""
