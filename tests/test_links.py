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


@pytest.mark.unit
def test_the_link_carries_no_credentials_of_the_tracking_uri() -> None:
    mlflow = {"tracking_uri": "https://ann:tok-41d2@mlflow.example.com", "experiment_id": "3", "run_id": "r"}
    assert mlflow_run_url(mlflow) == "https://mlflow.example.com/#/experiments/3/runs/r"
