"""Shared fixtures: one local Spark session and one SQLite MLflow store per test session.

Airflow reads AIRFLOW_HOME when first imported, so the isolated home is set here, before any test
module imports Airflow.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import (
    ConnectServer,
    MlflowServer,
    RestartableMlflowServer,
    SparkCluster,
    mlflow_server,
    spark_connect_server,
    spark_standalone_cluster,
)

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="sparktune-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path), "refresh_interval": 0},
        }
        for name, path in (
            ("sparktune_examples", REPO / "example_dags"),
            ("sparktune_test_dags", REPO / "tests" / "dags"),
        )
    ]
)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ.pop("MLFLOW_TRACKING_URI", None)
for _key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
    os.environ.pop(_key)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The one SparkSession of the test session: local[2], UI off, bound to 127.0.0.1.

    Its Python workers fork from this provider's daemon, as in the sessions the Spark hook makes.
    """
    from pyspark.sql import SparkSession

    from airflow_provider_sparktune.tuning.dispatch.daemon import DAEMON_MODULE, DAEMON_MODULE_CONF

    session = (
        SparkSession.builder.master("local[2]")
        .appName("sparktune-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config(DAEMON_MODULE_CONF, DAEMON_MODULE)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its __del__ logs after pytest closed stdout


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite MLflow store; tests keep apart by experiment name."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def experiment_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite) under the isolated AIRFLOW_HOME."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ},
        timeout=300,
    )
    return _HOME


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """A real Spark standalone master and worker on 127.0.0.1, for the whole test session."""
    with spark_standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectServer]:
    """A real Spark Connect server (pyspark's jars, local[2]) on 127.0.0.1, for the whole test session."""
    with spark_connect_server(tmp_path_factory.mktemp("spark-connect")) as server:
        yield server


@pytest.fixture(scope="session")
def connect_spark(connect_server: ConnectServer) -> Iterator[Any]:
    """A Spark Connect session on ``connect_server``, beside the classic ``spark`` session.

    Made with the Connect module's own builder: ``pyspark.sql.SparkSession.builder.remote`` marks the
    whole process as Spark Connect, after which no classic session can start in it.
    """
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    session = ConnectSession.builder.remote(connect_server.url).create()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def mlflow_tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1, for the whole test session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def restartable_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableMlflowServer]:
    """An ``mlflow server`` that tests stop and start again; running at the start of each test."""
    server = RestartableMlflowServer(tmp_path_factory.mktemp("mlflow-outage"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_outage_server(restartable_mlflow: RestartableMlflowServer) -> RestartableMlflowServer:
    restartable_mlflow.start()
    return restartable_mlflow
