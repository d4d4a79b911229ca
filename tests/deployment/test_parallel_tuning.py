"""Four tuning tasks start at the same moment on a fresh embedded MLflow store: 2 DAG runs x 2 tasks."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.deployment.harness import AirflowApi, Deployment, parent_runs, trial_runs

DAG = "deploy_parallel_tuning"
TASKS = ("tune_a", "tune_b")


@pytest.mark.deployment
def test_four_tuning_tasks_starting_together_on_a_fresh_embedded_store_all_succeed(
    deployment: Deployment, api: AirflowApi
) -> None:
    store = deployment.home / "mlflow.db"
    assert not store.exists()  # fresh: no task has opened the embedded store yet
    api.set_paused(DAG, False)
    run_ids = [api.trigger(DAG), api.trigger(DAG)]
    runs = [api.wait_for_run(DAG, run_id, timeout_s=480) for run_id in run_ids]

    tis = {(r, t): ti for r in run_ids for t, ti in api.task_instances(DAG, r).items()}
    failed = {key: ti["state"] for key, ti in tis.items() if ti["state"] != "success"}
    logs = "\n".join(deployment.task_log(DAG, r, t, ti["try_number"]) for (r, t), ti in tis.items())
    assert not failed, f"{failed}\n{logs[-8000:]}"
    assert [r["state"] for r in runs] == ["success", "success"]
    # They really ran side by side: every task started before any of them ended.
    starts = [datetime.fromisoformat(ti["start_date"]) for ti in tis.values()]
    ends = [datetime.fromisoformat(ti["end_date"]) for ti in tis.values()]
    assert len(tis) == 4 and max(starts) < min(ends)

    uri = f"sqlite:///{store.resolve()}"
    parents_seen = set()
    for run_id in run_ids:
        for task_id in TASKS:
            value = api.xcom(DAG, run_id, task_id)
            assert value["mlflow"]["tracking_uri"] == uri  # the embedded store under AIRFLOW_HOME
            assert value["trials"] == {
                "total": 4,
                "ok": 4,
                "failed": 0,
                "cancelled": 0,
                "pruned": 0,
                "lost": 0,
            }
            [parent] = parent_runs(uri, f"{DAG}.{task_id}", run_id)
            assert parent.info.run_id == value["mlflow"]["run_id"]
            assert parent.info.status == "FINISHED"
            trials = trial_runs(uri, parent)
            assert [r.info.status for r in trials] == ["FINISHED"] * 4  # every trial of every task
            assert min(r.data.metrics["loss"] for r in trials) == pytest.approx(value["best_loss"])
            parents_seen.add(parent.info.run_id)
    assert len(parents_seen) == 4
