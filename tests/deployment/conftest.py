"""One real Airflow deployment for all the tests in this folder (starting one costs a minute on 2 cores);
it is stopped after the last of them, so that it does not idle through the rest of the suite.

Postgres is the metadata database, as in docker-compose.yaml, when Debian's ``postgresql`` is installed
and we are root (its server runs as the ``postgres`` user); otherwise SQLite, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.harness import (
    EXAMPLE_DAGS,
    TEST_DAGS,
    AirflowApi,
    Deployment,
    airflow_deployment,
    postgres,
    postgres_usable,
)

DAG_FILES = [
    *sorted(TEST_DAGS.glob("deploy_*.py")),
    EXAMPLE_DAGS / "example_nightly_retune.py",
    EXAMPLE_DAGS / "example_nightly_consumers.py",
]
DAG_IDS = [
    "deploy_parallel_tuning",
    "deploy_mark_failed",
    "deploy_killed_retry",
    "deploy_extra_link",
    "deploy_sensor_deferrable",
    "deploy_sensor_reschedule",
    "example_nightly_retune",
    "example_nightly_report",
    "example_nightly_serving",
]


@pytest.fixture(scope="package")
def metadata_db_url() -> Iterator[str | None]:
    if not postgres_usable():
        warnings.warn("Postgres is not installed or we are not root: SQLite metadata DB", stacklevel=1)
        yield None
        return
    with postgres() as server:
        yield server.sqlalchemy_url


@pytest.fixture(scope="package")
def deployment(metadata_db_url: str | None) -> Iterator[Deployment]:
    with airflow_deployment(metadata_db_url, DAG_FILES) as running:
        running.rest.wait_for_dags(DAG_IDS)
        yield running


@pytest.fixture
def api(deployment: Deployment) -> AirflowApi:
    return deployment.rest


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path
