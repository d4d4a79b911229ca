"""A running tuning task marked failed through the REST API, as the UI's "Mark as failed" does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.deployment.harness import (
    AirflowApi,
    Deployment,
    alive,
    existing_store,
    is_java,
    parent_runs,
    spark_ui_jobs,
    trial_runs,
)
from tests.servers import SparkCluster, get_json

DAG = "deploy_mark_failed"


@pytest.mark.deployment
def test_a_task_marked_failed_ends_killed_and_leaves_no_driver_or_spark_job(
    deployment: Deployment, api: AirflowApi, spark_cluster: SparkCluster, tmp_path: Path
) -> None:
    uri = existing_store(tmp_path)
    api.set_connection("deploy_mark_failed_mlflow", "mlflow", uri)
    host, port = spark_cluster.master_url.rsplit(":", 1)
    extra = {"connect_timeout": 120, "spark_conf": {"spark.driver.host": "127.0.0.1"}}
    api.set_connection("deploy_spark_cluster", "spark", host, port=int(port), extra=json.dumps(extra))
    assert get_json(f"{spark_cluster.master_ui}/json/")["activeapps"] == []
    started = tmp_path / "started"
    started.mkdir()
    api.set_paused(DAG, False)
    run_id = api.trigger(DAG, conf={"started_dir": str(started)})
    ti = api.wait_for_state(DAG, run_id, "tune", ["running"], timeout_s=180)

    # Wait until both trials run: each objective says so, and the task's own Spark driver shows a job
    # with active tasks (on a loaded machine the resident tasks can take many seconds to connect back).
    deadline = time.monotonic() + 240
    jvms: list = []
    while True:
        task = deployment.task_process(ti["id"])
        jvms = [p for p in task.children(recursive=True) if is_java(p)] if task else []
        jobs = spark_ui_jobs(jvms[0]) if jvms else None
        if jobs and sum(j["numActiveTasks"] for j in jobs) >= 2 and len(list(started.iterdir())) >= 2:
            break
        state = api.task_instance(DAG, run_id, "tune")["state"]
        assert state == "running", deployment.task_log(DAG, run_id, "tune")[-5000:]
        assert time.monotonic() < deadline, "the trials did not start"
        time.sleep(1)
    [app] = get_json(f"{spark_cluster.master_ui}/json/")["activeapps"]  # the driver is on the cluster

    api.mark(DAG, run_id, "tune", "failed")
    marked = time.monotonic()
    while any(alive(p.pid) for p in jvms) and time.monotonic() - marked < 30:
        time.sleep(0.5)
    assert not [p.pid for p in jvms if alive(p.pid)], "the Spark driver JVM outlived the bound"
    assert deployment.java_processes() == []  # no JVM anywhere in the deployment's process groups
    while get_json(f"{spark_cluster.master_ui}/json/")["activeapps"] and time.monotonic() - marked < 30:
        time.sleep(0.5)
    master = get_json(f"{spark_cluster.master_ui}/json/")
    assert master["activeapps"] == []  # no Spark job or executor left on the cluster
    assert app["id"] in {a["id"] for a in master["completedapps"]}

    assert api.task_instance(DAG, run_id, "tune")["state"] == "failed"
    assert not api.has_xcom(DAG, run_id, "tune")  # no result: the run did not finish
    [parent] = parent_runs(uri, f"{DAG}.tune", run_id)
    trials = trial_runs(uri, parent)
    assert parent.info.status == "KILLED", deployment.task_log(DAG, run_id, "tune")[-5000:]
    assert len(trials) == 2  # the two running trials (parallelism 2), none started after the kill
    assert [r.info.status for r in trials] == ["KILLED"] * len(trials)
