from __future__ import annotations

import json
import os
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import TrackingError
from airflow_provider_sparktune.hooks.mlflow import TOKEN_ENV, MlflowHook, embedded_tracking_uri
from tests.servers import MlflowServer, token_checking_proxy


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
def test_without_the_default_connection_env_then_embedded_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
    assert MlflowHook().get_tracking_uri() == "sqlite:////tmp/elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert MlflowHook("mlflow_default").get_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    assert embedded_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    printed = capsys.readouterr()  # the hook's log is Airflow's structured logger
    lines = [x for x in (printed.out + printed.err).splitlines() if "'mlflow_default' is not set" in x]
    assert len(lines) == 2 and all("warning" in x.lower() for x in lines), lines
    assert "tracking to sqlite:////tmp/elsewhere.db (MLFLOW_TRACKING_URI)" in lines[0]
    assert (
        f"tracking to sqlite:///{tmp_path}/mlflow.db (the embedded SQLite store under AIRFLOW_HOME)"
        in lines[1]
    )
    assert "create it (Admin > Connections, or AIRFLOW_CONN_MLFLOW_DEFAULT)" in lines[1]


@pytest.mark.unit
def test_a_missing_mlflow_conn_id_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")  # not a way around it
    with pytest.raises(TrackingError) as caught:
        MlflowHook("mlflow_defualt").get_tracking_uri()
    assert str(caught.value) == (
        "mlflow_conn_id 'mlflow_defualt': no such Airflow connection; create it (Admin > Connections, or "
        "AIRFLOW_CONN_MLFLOW_DEFUALT) or leave mlflow_conn_id at its default 'mlflow_default' to track to "
        "MLFLOW_TRACKING_URI or, unset, the SQLite store under AIRFLOW_HOME"
    )
    ok, message = MlflowHook("mlflow_defualt").test_connection()
    assert not ok and message.startswith("mlflow_conn_id 'mlflow_defualt': no such Airflow connection")


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


TOKEN = "sparktune-token-4c1e"


def x_objective(params: dict[str, Any]) -> float:
    return float(params["x"])


@pytest.mark.integration
def test_the_token_is_sent_to_a_tracking_server_that_requires_it(
    spark: Any, mlflow_tracking_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy that refuses requests without the bearer token, a whole run is tracked."""
    from mlflow import MlflowClient

    from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator

    experiment = "token-required"
    with token_checking_proxy(mlflow_tracking_server.uri, TOKEN) as proxy:
        conn = {"conn_type": "mlflow", "host": proxy.uri, "password": TOKEN}
        monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TOKEN", json.dumps(conn))
        op = HyperoptSparkOperator(
            task_id="t",
            search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
            objective=x_objective,
            max_evals=2,
            parallelism=2,
            mlflow_conn_id="mlflow_token",
            mlflow_experiment=experiment,
        )
        value = op.execute({"ti": _TaskInstance(), "run_id": "manual__token"})  # type: ignore[arg-type]
        assert proxy.refused == 0 and proxy.authorized > 3  # every request carried the token
        found = MlflowClient(mlflow_tracking_server.uri).get_run(value["mlflow"]["run_id"])
        assert found.info.status == "FINISHED" and found.data.metrics["trials_total"] == 2

        wrong = {**conn, "password": "not-the-token"}
        monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TOKEN", json.dumps(wrong))
        with pytest.raises(TrackingError, match="^mlflow_conn_id"):
            HyperoptSparkOperator(
                task_id="t",
                search_space={"x": {"hp": "uniform", "low": 0, "high": 1}},
                objective=x_objective,
                max_evals=2,
                mlflow_conn_id="mlflow_token",
                mlflow_experiment=experiment,
            ).execute({"ti": _TaskInstance(), "run_id": "manual__wrong"})  # type: ignore[arg-type]
        assert proxy.refused > 0  # the proxy does refuse: the first run's success was not for free


class _TaskInstance:
    """execute() reads try_number and pushes XCom; a real DAG run is not what this test is about."""

    try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        pass
