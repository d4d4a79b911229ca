"""StagedDataSensor in a real deployment: deferred in the triggerer, and rescheduled by the scheduler,
for data written after the sensor started; the tuning task downstream trains on the plan it returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.deployment.harness import AirflowApi, Deployment, existing_store, parent_runs, trial_runs

ROWS = 200
WAITING = {"deploy_sensor_deferrable": "deferred", "deploy_sensor_reschedule": "up_for_reschedule"}


@dataclass
class SensorRun:
    run_id: str
    uri: str
    waiting: dict[str, Any]  # the sensor's task instance while the data was missing
    written_at: float
    finished: dict[str, Any]


def write_dataset(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"x": np.arange(float(ROWS)), "label": np.arange(ROWS) % 2})
    frame.to_parquet(root / "part-00000.parquet")
    (root / "_SUCCESS").touch()  # written last


@pytest.fixture(scope="module")
def sensor_runs(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, SensorRun]]:
    """Both DAGs at once: the sensors start, wait (deferred / up for reschedule), then the data lands."""
    api = deployment.rest
    work = tmp_path_factory.mktemp("staged-data")
    mlflow_uri = existing_store(work / "mlflow")
    api.set_connection("deploy_sensor_mlflow", "mlflow", mlflow_uri)
    started: dict[str, tuple[str, str]] = {}
    for dag_id in WAITING:
        uri = str(work / dag_id / "ds=2026-12-01")
        api.set_paused(dag_id, False)
        started[dag_id] = (api.trigger(dag_id, {"uri": uri}), uri)
    waiting = {
        dag_id: api.wait_for_state(dag_id, run_id, "wait_for_data", [WAITING[dag_id]], timeout_s=240)
        for dag_id, (run_id, _) in started.items()
    }
    for dag_id, (run_id, _) in started.items():  # still waiting: nothing is there yet
        assert api.task_instance(dag_id, run_id, "wait_for_data")["state"] in (
            WAITING[dag_id],
            "scheduled",
            "queued",
            "running",
        )
    written_at = time.time()
    for _, uri in started.values():
        write_dataset(Path(uri))
    runs = {}
    for dag_id, (run_id, uri) in started.items():
        finished = api.wait_for_run(dag_id, run_id, timeout_s=420)
        runs[dag_id] = SensorRun(run_id, uri, waiting[dag_id], written_at, finished)
    return mlflow_uri, runs


def check_run(deployment: Deployment, api: AirflowApi, mlflow_uri: str, dag_id: str, run: SensorRun) -> None:
    logs = "\n".join(deployment.task_log(dag_id, run.run_id, t) for t in ("wait_for_data", "tune"))
    assert run.finished["state"] == "success", logs[-6000:]
    sensor = api.task_instance(dag_id, run.run_id, "wait_for_data")
    assert sensor["state"] == "success"
    assert sensor["end_date"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.written_at))

    plan = api.xcom(dag_id, run.run_id, "wait_for_data")
    assert plan["uri"].rstrip("/") == run.uri and plan["mode"] == "broadcast" and plan["format"] == "parquet"
    value = api.xcom(dag_id, run.run_id, "tune")
    assert value["staging"]["uri"] == plan["uri"] and value["trials"]["ok"] == 2

    [parent] = parent_runs(mlflow_uri, f"{dag_id}.tune", run.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["staging_mode"] == "broadcast"
    assert parent.data.params["staging_uri"] == plan["uri"]
    trials = trial_runs(mlflow_uri, parent)
    assert [r.data.metrics["rows"] for r in trials] == [ROWS, ROWS]  # the trials read the staged data


@pytest.mark.deployment
def test_deferrable_sensor_waits_in_the_triggerer(
    deployment: Deployment, api: AirflowApi, sensor_runs: tuple[str, dict[str, SensorRun]]
) -> None:
    mlflow_uri, runs = sensor_runs
    run = runs["deploy_sensor_deferrable"]
    assert run.waiting["state"] == "deferred"
    assert run.waiting["trigger"]["classpath"].endswith("StagedDataTrigger")
    check_run(deployment, api, mlflow_uri, "deploy_sensor_deferrable", run)


@pytest.mark.deployment
def test_reschedule_sensor_is_rescheduled_by_the_scheduler(
    deployment: Deployment, api: AirflowApi, sensor_runs: tuple[str, dict[str, SensorRun]]
) -> None:
    mlflow_uri, runs = sensor_runs
    run = runs["deploy_sensor_reschedule"]
    assert run.waiting["state"] == "up_for_reschedule"
    check_run(deployment, api, mlflow_uri, "deploy_sensor_reschedule", run)
