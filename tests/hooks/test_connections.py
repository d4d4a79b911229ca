"""A connection id the DAG names and Airflow cannot find fails the task naming it, whichever
adapter reads it (operator, sensor, registry gate); the fallback is for the default ids only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import SparkConnectionError, StagingError, TrackingError
from airflow_provider_sparktune.hooks.connections import env_var, no_such_connection

TEST_DAGS = Path(__file__).resolve().parents[1] / "dags"
SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}}


def x_loss(params: dict[str, Any], data: Any = None) -> float:
    return float(params["x"])


class _TaskInstance:
    try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def context() -> dict[str, Any]:
    return {"ti": _TaskInstance(), "run_id": "manual__missing"}


@pytest.mark.unit
def test_the_error_names_the_field_the_id_and_both_fixes() -> None:
    assert env_var("spark-prod.eu") == "AIRFLOW_CONN_SPARK-PROD.EU"
    assert no_such_connection("spark_conn_id", "spark_defualt", "spark_default", "run on X") == (
        "spark_conn_id 'spark_defualt': no such Airflow connection; create it (Admin > Connections, or "
        "AIRFLOW_CONN_SPARK_DEFUALT) or leave spark_conn_id at its default 'spark_default' to run on X"
    )


@pytest.mark.unit
def test_the_operator_fails_on_a_missing_spark_or_mlflow_conn_id_before_mlflow_or_spark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator

    store = tmp_path / "mlflow.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{store}"})
    )
    op = HyperoptSparkOperator(
        task_id="t", search_space=SPACE, objective=x_loss, max_evals=2, spark_conn_id="spark_defualt"
    )
    with pytest.raises(
        SparkConnectionError, match=r"^spark_conn_id 'spark_defualt': no such Airflow connection"
    ):
        op.execute(context())  # type: ignore[arg-type]
    assert op.spark_hook._session is None and not store.exists()
    op = HyperoptSparkOperator(
        task_id="t", search_space=SPACE, objective=x_loss, max_evals=2, mlflow_conn_id="mlflow_defualt"
    )
    with pytest.raises(TrackingError, match=r"^mlflow_conn_id 'mlflow_defualt': no such Airflow connection"):
        op.execute(context())  # type: ignore[arg-type]
    assert op.spark_hook._session is None
    op = HyperoptSparkOperator(
        task_id="t", search_space=SPACE, objective=x_loss, data=str(tmp_path), data_conn_id="fsspec_defualt"
    )
    with pytest.raises(StagingError, match=r"^data_conn_id 'fsspec_defualt': no such Airflow connection"):
        op.execute(context())  # type: ignore[arg-type]


@pytest.mark.unit
def test_the_sensor_fails_on_a_missing_data_conn_id_before_any_poke_or_deferring(tmp_path: Path) -> None:
    from airflow_provider_sparktune.sensors.staged_data import StagedDataSensor

    for deferrable in (False, True):
        sensor = StagedDataSensor(
            task_id="s", uri=str(tmp_path), data_conn_id="fsspec_defualt", deferrable=deferrable, timeout=5
        )
        with pytest.raises(StagingError, match=r"^data_conn_id 'fsspec_defualt': no such Airflow connection"):
            sensor.execute(context())  # type: ignore[arg-type]


@pytest.mark.unit
def test_the_registry_gate_fails_on_a_missing_mlflow_conn_id() -> None:
    from airflow_provider_sparktune.operators.registry_gate import ModelRegistryGateOperator

    gate = ModelRegistryGateOperator(
        task_id="gate",
        model_uri="runs:/abc/model",
        registered_model_name="m",
        metric="auc",
        mlflow_conn_id="mlflow_defualt",
    )
    with pytest.raises(TrackingError) as caught:
        gate.execute(context())  # type: ignore[arg-type]
    assert str(caught.value).startswith(
        "mlflow_conn_id 'mlflow_defualt': no such Airflow connection; create it (Admin > Connections, or "
        "AIRFLOW_CONN_MLFLOW_DEFUALT) or leave mlflow_conn_id at its default 'mlflow_default'"
    )


@pytest.mark.integration
def test_a_dag_naming_a_missing_spark_connection_fails_naming_it_and_starts_no_spark(
    spark: Any,
    airflow_db: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A real ``dag.test()`` run: the typo fails the task; no Spark job runs and MLflow is not touched.

    Spark is running in this process, so a hook that fell back to ``local[*]`` would reuse it and its
    trials would show as jobs.
    """
    from airflow.dag_processing.dagbag import DagBag

    from tests.spark_jobs import all_job_ids, jobs_started_since

    store = tmp_path / "mlflow.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{store}"})
    )
    dag = DagBag(dag_folder=str(TEST_DAGS / "missing_connection.py")).get_dag("missing_spark_connection")
    jobs_before = all_job_ids(spark)
    dag_run = dag.test()
    assert dag_run.state == "failed"
    output = capfd.readouterr().out
    assert (
        "spark_conn_id 'spark_defualt': no such Airflow connection; create it (Admin > Connections, or "
        "AIRFLOW_CONN_SPARK_DEFUALT) or leave spark_conn_id at its default 'spark_default' to run on "
        "Spark local[*] on this worker"
    ) in output, output[-4000:]
    assert jobs_started_since(spark, jobs_before) == set()
    assert not store.exists()  # MLflow was not touched either


@pytest.mark.integration
def test_a_dag_naming_a_missing_data_connection_fails_naming_it(
    airflow_db: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The dataset is there and ready: only the missing connection fails the sensor."""
    import pandas as pd
    from airflow.dag_processing.dagbag import DagBag

    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(tmp_path / "part-0.parquet")
    dag = DagBag(dag_folder=str(TEST_DAGS / "missing_connection.py")).get_dag("missing_data_connection")
    dag_run = dag.test(run_conf={"uri": str(tmp_path)})
    assert dag_run.state == "failed"
    output = capfd.readouterr().out
    assert "data_conn_id 'fsspec_defualt': no such Airflow connection; create it" in output, output[-4000:]
