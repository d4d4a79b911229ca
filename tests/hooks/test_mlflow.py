from __future__ import annotations

import json
import os

import pytest

from airflow_provider_sparktune.exceptions import TrackingError
from airflow_provider_sparktune.hooks.mlflow import TOKEN_ENV, MlflowHook, embedded_tracking_uri


@pytest.mark.unit
def test_host_is_the_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ML", json.dumps({"conn_type": "mlflow", "host": "http://127.0.0.1:5000/"})
    )
    assert MlflowHook("ml").get_tracking_uri() == "http://127.0.0.1:5000"


@pytest.mark.unit
def test_host_and_port_without_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ML", json.dumps({"conn_type": "mlflow", "host": "mlflow", "port": 5000}))
    assert MlflowHook("ml").get_tracking_uri() == "http://mlflow:5000"


@pytest.mark.unit
def test_token_is_exposed_only_inside_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    conn = {"conn_type": "mlflow", "host": "https://mlflow.example", "password": "s3cr3t-token"}
    monkeypatch.setenv("AIRFLOW_CONN_ML", json.dumps(conn))
    hook = MlflowHook("ml")
    with hook.credentials():
        assert os.environ[TOKEN_ENV] == "s3cr3t-token"
    assert TOKEN_ENV not in os.environ
    assert "s3cr3t" not in hook.get_tracking_uri()


@pytest.mark.unit
def test_without_connection_env_then_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
    assert MlflowHook("no_such_mlflow").get_tracking_uri() == "sqlite:////tmp/elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert MlflowHook("no_such_mlflow").get_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    assert embedded_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.unit
def test_wrong_connection_type_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ML", json.dumps({"conn_type": "http", "host": "x"}))
    with pytest.raises(TrackingError, match="mlflow_conn_id: connection 'ml' has type 'http'"):
        MlflowHook("ml").get_tracking_uri()


@pytest.mark.unit
def test_test_connection_reports_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers import free_port

    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_ML", json.dumps({"conn_type": "mlflow", "host": f"http://127.0.0.1:{port}"})
    )
    ok, message = MlflowHook("ml").test_connection()
    assert not ok
    assert "unreachable" in message


MLFLOW_BAD_INPUT = [
    # (case id, connection JSON for conn id "bad", error starts with)
    (
        "mlflow_conn_id-unknown-type",
        json.dumps({"conn_type": "http", "host": "x"}),
        "mlflow_conn_id: connection 'bad'",
    ),
    (
        "mlflow_conn_id-empty-host",
        json.dumps({"conn_type": "mlflow", "host": "  "}),
        "mlflow_conn_id 'bad': ",
    ),
    ("mlflow_conn_id-unreachable", "UNREACHABLE", "mlflow_conn_id: MLflow tracking server"),
]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("connection", "expected"),
    [case[1:] for case in MLFLOW_BAD_INPUT],
    ids=[case[0] for case in MLFLOW_BAD_INPUT],
)
def test_bad_input(monkeypatch: pytest.MonkeyPatch, connection: str, expected: str) -> None:
    from tests.servers import free_port

    if connection == "UNREACHABLE":
        connection = json.dumps({"conn_type": "mlflow", "host": f"http://127.0.0.1:{free_port()}"})
    monkeypatch.setenv("AIRFLOW_CONN_BAD", connection)
    ok, message = MlflowHook("bad").test_connection()
    assert not ok
    assert message.startswith(expected), message
