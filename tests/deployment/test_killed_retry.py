"""The tuning task's process killed with SIGKILL mid-run: the scheduler's own retry resumes it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.deployment.harness import AirflowApi, Deployment, existing_store, parent_runs, trial_runs

DAG = "deploy_killed_retry"


@pytest.mark.deployment
def test_a_killed_task_is_retried_by_the_scheduler_and_resumes(
    deployment: Deployment, api: AirflowApi, tmp_path: Path
) -> None:
    uri = existing_store(tmp_path)
    api.set_connection("deploy_killed_retry_mlflow", "mlflow", uri)
    api.set_paused(DAG, False)
    run_id = api.trigger(DAG)
    ti = api.wait_for_state(DAG, run_id, "tune", ["running"], timeout_s=180)

    deadline = time.monotonic() + 240
    while True:  # three of the eight trials finished and written
        parents = parent_runs(uri, f"{DAG}.tune", run_id)
        done = [r for r in trial_runs(uri, parents[0]) if r.info.status == "FINISHED"] if parents else []
        if len(done) >= 3:
            break
        assert api.task_instance(DAG, run_id, "tune")["state"] == "running"
        assert time.monotonic() < deadline, deployment.task_log(DAG, run_id, "tune")[-5000:]
        time.sleep(0.5)
    task = deployment.task_process(ti["id"])
    assert task is not None
    os.kill(task.pid, signal.SIGKILL)  # no cleanup runs in the task: its parent run stays RUNNING

    run = api.wait_for_run(DAG, run_id, timeout_s=360)
    tries = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/tune/tries")["task_instances"]
    logs = "\n".join(deployment.task_log(DAG, run_id, "tune", n) for n in (1, 2))
    assert run["state"] == "success", logs[-6000:]
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")]

    first, second = parent_runs(uri, f"{DAG}.tune", run_id)
    first_trials, second_trials = trial_runs(uri, first), trial_runs(uri, second)
    assert first.info.status == "FAILED"  # closed by the try that took over
    assert second.info.status == "FINISHED"
    assert second.data.tags["sparktune.resumed_from"] == first.info.run_id
    finished_first = [r for r in first_trials if r.info.status == "FINISHED"]
    assert int(second.data.tags["sparktune.resumed_trials"]) == len(finished_first) >= 3
    assert len(finished_first) + len(second_trials) == 8  # only the remaining trials ran
    vals = [r.data.tags["sparktune.vals"] for r in finished_first + second_trials]
    assert len(set(vals)) == 8  # distinct trials, none run twice

    value = api.xcom(DAG, run_id, "tune")
    assert value["trials"]["total"] == 8
    assert value["mlflow"]["run_id"] == second.info.run_id
    losses = [r.data.metrics["loss"] for r in finished_first + second_trials]
    assert value["best_loss"] == pytest.approx(min(losses))  # the best covers both tries
