"""The local stack's wiring, checked without a Docker engine: what `docker compose up` would run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import MLFLOW_SERVER_ENV, connect_server_args, master_args, mlflow_server_args, worker_args

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
]
pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def test_every_service_of_the_stack_is_there(compose: dict[str, Any]) -> None:
    expected = {*AIRFLOW_SERVICES, "postgres", "spark-master", "spark-worker", "mlflow"}
    assert expected <= set(compose["services"])


def test_airflow_spark_and_mlflow_share_one_image_built_here(compose: dict[str, Any]) -> None:
    services = compose["services"]
    built = [*AIRFLOW_SERVICES, "spark-master", "spark-worker", "mlflow"]
    images = {services[name]["image"] for name in built}
    assert images == {"airflow-provider-sparktune:local"}
    assert all(services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"} for name in built)
    assert (REPO / services["spark-master"]["build"]["dockerfile"]).exists()


def test_connections_point_at_services_and_ports_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["airflow-scheduler"]["environment"]
    spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert spark["conn_type"] == "spark"
    master_host = spark["host"].removeprefix("spark://")
    assert master_host in services
    assert services[master_host]["command"] == ["spark-class", *master_args(master_host, spark["port"], 8080)]
    mlflow = json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert mlflow["conn_type"] == "mlflow"
    mlflow_host, mlflow_port = mlflow["host"].removeprefix("http://").split(":")
    command = services[mlflow_host]["command"]
    assert command[: 1 + 11] == [
        "mlflow",
        *mlflow_server_args("0.0.0.0", int(mlflow_port), "sqlite:////mlflow/mlflow.db", "/mlflow/artifacts"),
    ]
    assert f"{mlflow_host}:{mlflow_port}" in command[command.index("--allowed-hosts") + 1].split(",")
    assert services[mlflow_host]["environment"] == MLFLOW_SERVER_ENV


def test_worker_runs_what_the_cluster_tests_run(compose: dict[str, Any]) -> None:
    worker = compose["services"]["spark-worker"]
    assert worker["command"] == [
        "spark-class",
        *worker_args("spark://spark-master:7077", "spark-worker", 8081, "/opt/spark-work", 2),
    ]
    assert "spark-work:/opt/spark-work" in worker["volumes"]


def test_optional_connect_server_runs_what_the_connect_tests_run(compose: dict[str, Any]) -> None:
    connect = compose["services"]["spark-connect"]
    assert connect["profiles"] == ["connect"]  # `docker compose up` alone leaves it out
    assert connect["image"] == "airflow-provider-sparktune:local"
    assert connect["command"] == [
        "spark-submit",
        *connect_server_args("0.0.0.0", 15002, "spark://spark-master:7077", driver_host="spark-connect"),
    ]
    assert connect["depends_on"]["spark-master"] == {"condition": "service_healthy"}
    assert connect["healthcheck"]["test"]


def test_volumes_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "./example_dags:/opt/airflow/dags" in services["airflow-scheduler"]["volumes"]
    assert {"postgres-db", "airflow-logs", "spark-work", "mlflow-data"} <= set(compose["volumes"])
    assert "mlflow-data:/mlflow" in services["mlflow"]["volumes"]
    for name in [
        "postgres",
        "spark-master",
        "spark-worker",
        "mlflow",
        "airflow-apiserver",
        "airflow-scheduler",
    ]:
        assert services[name]["healthcheck"]["test"], name
    for name in AIRFLOW_SERVICES[1:]:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}, name
        for upstream in ["postgres", "spark-master", "mlflow"]:
            assert depends[upstream] == {"condition": "service_healthy"}, (name, upstream)
    assert services["spark-worker"]["depends_on"]["spark-master"] == {"condition": "service_healthy"}


def test_published_ports_stay_on_loopback(compose: dict[str, Any]) -> None:
    published = [port for service in compose["services"].values() for port in service.get("ports", [])]
    assert sorted(published) == [
        "127.0.0.1:15002:15002",
        "127.0.0.1:5000:5000",
        "127.0.0.1:8080:8080",
        "127.0.0.1:8081:8080",
        "127.0.0.1:8082:8081",
    ]


def test_dockerfile_installs_java_and_this_provider() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM apache/airflow:" in dockerfile
    assert "openjdk-17-jre-headless" in dockerfile
    assert '"/opt/sparktune[sklearn,plot]"' in dockerfile
    assert "PYSPARK_PYTHON=" in dockerfile
    assert (REPO / "docker" / "spark-class").stat().st_mode & 0o111


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is installed by .ci/run")
def test_docker_compose_accepts_the_file() -> None:
    done = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
