"""The nightly example DAG on its schedule: the second scheduled run warm starts from the first, each
night's asset event starts a run of the report DAG with exactly that night's parameters, and each
promotion by the registry gate starts a run of the serving DAG with exactly the promoted version."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.deployment.harness import AirflowApi, Deployment, existing_store, parent_runs, trial_runs

DAG = "example_nightly_retune"
REPORT = "example_nightly_report"
SERVING = "example_nightly_serving"
TUNED_URI = "sparktune://tuning/example_nightly_retune.tune"
CHAMPION_URI = "sparktune://model/example_nightly_retune.model/champion"


def stop_later_runs(api: AirflowApi, keep: set[str]) -> None:
    """Pause the DAG and fail the runs the scheduler created after the two we need (catch-up goes on)."""
    api.set_paused(DAG, True)
    for run in api.dag_runs(DAG):
        if run["dag_run_id"] not in keep and run["state"] in ("queued", "running"):
            api.call("PATCH", f"/dags/{DAG}/dagRuns/{run['dag_run_id']}", json={"state": "failed"})


def failed_tasks(deployment: Deployment, api: AirflowApi, run_ids: list[str]) -> str:
    """The logs of the tasks that failed in these runs, for the assertion message."""
    out = []
    for run_id in run_ids:
        for task_id, ti in api.task_instances(DAG, run_id).items():
            if ti["state"] != "success":
                log = deployment.task_log(DAG, run_id, task_id, max(ti["try_number"], 1))
                out.append(f"{run_id} {task_id} {ti['state']}:\n{log[-4000:]}")
    return "\n".join(out)


def triggering_runs(api: AirflowApi, dag_id: str, uri: str, run: dict[str, Any]) -> list[str]:
    """The nightly runs whose events of ``uri`` started this consumer run, oldest first."""
    path = f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents"
    events = sorted(api.get(path)["asset_events"], key=lambda e: e["timestamp"])
    return [e["source_run_id"] for e in events if e["uri"] == uri]


def wait_for_consumers(
    api: AirflowApi, dag_id: str, uri: str, nights: set[str], timeout_s: float = 300
) -> list[dict[str, Any]]:
    """Until the runs of ``dag_id`` that the events of ``nights`` started have all finished."""

    def consumers() -> list[dict[str, Any]]:
        return [r for r in api.dag_runs(dag_id) if r["run_type"] == "asset_triggered"]

    def done(runs: list[dict[str, Any]]) -> bool:
        finished = [r for r in runs if r["state"] in ("success", "failed")]
        seen = {night for r in finished for night in triggering_runs(api, dag_id, uri, r)}
        return nights <= seen

    return api.wait_for(f"{dag_id} runs started by {sorted(nights)}", consumers, done, timeout_s)  # type: ignore[no-any-return]


@pytest.mark.deployment
@pytest.mark.timeout(1200)  # the deployment's start, two nights and the consumer runs they start
def test_second_scheduled_run_warm_starts_from_the_first(
    deployment: Deployment, api: AirflowApi, tmp_path: Path
) -> None:
    uri = existing_store(tmp_path)
    api.set_connection("mlflow_default", "mlflow", uri)
    first_two: list[dict[str, Any]] = []
    try:
        api.set_paused(REPORT, False)  # scheduled on the tuning asset: runs when a night emits its event
        api.set_paused(SERVING, False)  # scheduled on the champion asset: runs when the gate promotes
        api.set_paused(DAG, False)  # the scheduler catches up from start_date, one run at a time
        deadline = time.monotonic() + 600
        while True:
            runs = [r for r in api.dag_runs(DAG) if r["run_type"] == "scheduled"]
            runs.sort(key=lambda r: r["logical_date"])
            first_two = runs[:2]
            if len(first_two) == 2 and all(r["state"] in ("success", "failed") for r in first_two):
                break
            failed = [r["dag_run_id"] for r in first_two if r["state"] == "failed"]
            assert not failed, failed_tasks(deployment, api, failed)
            assert time.monotonic() < deadline, f"two scheduled runs did not finish: {runs}"
            time.sleep(2)
        nights = {r["dag_run_id"] for r in first_two}
        report_runs = wait_for_consumers(api, REPORT, TUNED_URI, nights)
        promoted = {n for n in nights if api.xcom(DAG, n, "gate")["decision"] == "promote"}
        serving_runs = wait_for_consumers(api, SERVING, CHAMPION_URI, promoted)
    finally:
        stop_later_runs(api, {r["dag_run_id"] for r in first_two})
        api.set_paused(REPORT, True)
        api.set_paused(SERVING, True)
        api.delete_connection("mlflow_default")

    logs = [
        deployment.task_log(DAG, r["dag_run_id"], t)
        for r in first_two
        for t in ("export_features", "wait_for_data", "tune", "train_final_model", "gate")
    ]
    assert [r["state"] for r in first_two] == ["success", "success"], "\n".join(logs)[-8000:]
    assert [r["logical_date"][:10] for r in first_two] == ["2026-01-01", "2026-01-02"]
    first, second = (api.xcom(DAG, r["dag_run_id"], "tune") for r in first_two)
    assert first["trials"]["total"] == second["trials"]["total"] == 8
    final = api.xcom(DAG, first_two[1]["dag_run_id"], "train_final_model")
    assert final["params"]["random_state"] == 0 and final["run_id"]

    # Each night's event started a report run (asset_triggered), which read exactly that night's result.
    for run_id in (r["dag_run_id"] for r in first_two):
        tuned = api.xcom(DAG, run_id, "tune")
        events = {e["uri"]: e for e in api.get("/assets/events", source_run_id=run_id)["asset_events"]}
        event = events[TUNED_URI]
        assert event["extra"] == tuned
        [report_run] = [r for r in report_runs if run_id in triggering_runs(api, REPORT, TUNED_URI, r)]
        assert report_run["run_type"] == "asset_triggered" and report_run["state"] == "success"
        read = api.xcom(REPORT, report_run["dag_run_id"], "read_tuning_event")
        newest = triggering_runs(api, REPORT, TUNED_URI, report_run)[-1]  # nights folded into one run
        assert read["triggered"] is True and read["source_run_id"] == newest
        if newest == run_id:
            assert read["best_params"] == tuned["best_params"] and read["best_loss"] == tuned["best_loss"]
            assert read["mlflow_run_id"] == tuned["mlflow"]["run_id"] == event["extra"]["mlflow"]["run_id"]
        # The gate's event exists only for a promotion, and the serving run it started used that version.
        gate = api.xcom(DAG, run_id, "gate")
        assert (CHAMPION_URI in events) == (gate["decision"] == "promote"), gate["reason"]
        if gate["decision"] == "promote":
            assert events[CHAMPION_URI]["extra"] == gate
            [serving_run] = [
                r for r in serving_runs if run_id in triggering_runs(api, SERVING, CHAMPION_URI, r)
            ]
            assert serving_run["state"] == "success"
            scored = api.xcom(SERVING, serving_run["dag_run_id"], "score_batch")
            if triggering_runs(api, SERVING, CHAMPION_URI, serving_run)[-1] == run_id:
                assert scored["model_uri"] == gate["model_uri"] and scored["rows"] == 569
    first_gate = api.xcom(DAG, first_two[0]["dag_run_id"], "gate")
    assert first_gate["decision"] == "promote" and first_gate["previous_champion_version"] is None
    assert api.xcom(DAG, first_two[0]["dag_run_id"], "tune")["improved"] is True  # the first night
    second_night = api.xcom(DAG, first_two[1]["dag_run_id"], "tune")
    assert second_night["previous_best_loss"] == first["best_loss"]

    [parent1] = parent_runs(uri, f"{DAG}.tune", first_two[0]["dag_run_id"])
    [parent2] = parent_runs(uri, f"{DAG}.tune", first_two[1]["dag_run_id"])
    assert parent1.info.run_id == first["mlflow"]["run_id"]
    assert parent2.info.run_id == second["mlflow"]["run_id"]
    # The first night looked for earlier nights (scheduled runs warm start) and found none.
    assert parent1.data.tags["sparktune.warm_start.from_runs"] == ""
    assert parent1.data.tags["sparktune.warm_start.trials"] == "0"
    assert parent2.data.tags["sparktune.warm_start.from_runs"] == parent1.info.run_id
    warm = int(parent2.data.tags["sparktune.warm_start.trials"])
    assert warm == 5  # warm_start_k: the best five of the first night's eight points
    trials1, trials2 = trial_runs(uri, parent1), trial_runs(uri, parent2)
    assert [r.data.tags["sparktune.origin"] for r in trials2] == ["warm_start"] * warm + ["new"] * (8 - warm)
    best1 = sorted(trials1, key=lambda r: r.data.metrics["loss"])[:warm]
    sources = {r.data.tags["sparktune.source_run"] for r in trials2[:warm]}
    assert sources == {r.info.run_id for r in best1}  # evaluated again first: last night's best points
