from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_sparktune.tracking import history
from airflow_provider_sparktune.tracking.history import (
    best_distinct,
    earlier_tries,
    previous_best_loss,
    warm_start_source,
)
from airflow_provider_sparktune.tuning.earlier_trials import EarlierTrial


def parent(
    client: Any,
    experiment_id: str,
    run_id: str,
    status: str = "RUNNING",
    key: str = "d.t",
    start_time: int | None = None,
) -> str:
    tags = {
        "airflow.dag_id": "d",
        "airflow.task_id": "t",
        "airflow.run_id": run_id,
        "sparktune.tuning_key": key,
    }
    created = client.create_run(experiment_id, start_time=start_time, tags=tags).info.run_id
    if status != "RUNNING":
        client.set_terminated(created, status=status)
    return str(created)


def trial(
    client: Any, experiment_id: str, parent_id: str, tid: int, x: float, status: str = "FINISHED"
) -> str:
    tags = {
        "mlflow.parentRunId": parent_id,
        "sparktune.tid": str(tid),
        "sparktune.status": "ok",
        "sparktune.vals": json.dumps({"x": x}),
    }
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_metric(run_id, "loss", x)
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return str(run_id)


@pytest.mark.integration
@pytest.mark.parametrize("airflow_run_id", ["scheduled__2026-01-01T00:00:00+00:00", "manual__o'brien"])
def test_earlier_tries_of_one_task_instance_and_their_complete_trials(
    mlflow_uri: str, experiment_name: str, airflow_run_id: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(experiment_name)
    killed = parent(client, experiment_id, airflow_run_id)
    trial(client, experiment_id, killed, 0, 0.4)
    trial(client, experiment_id, killed, 1, 0.2)
    trial(client, experiment_id, killed, 2, 0.9, status="RUNNING")  # its write was cut off: run again
    other_night = parent(client, experiment_id, "scheduled__other", status="FINISHED")
    trial(client, experiment_id, other_night, 0, 0.1)
    current = parent(client, experiment_id, airflow_run_id)

    attempt = {"airflow.dag_id": "d", "airflow.task_id": "t", "airflow.run_id": airflow_run_id}
    found = earlier_tries(client, experiment_id, attempt_tags=attempt, current_parent=current)
    assert found.parent_run_ids == (killed,) and found.still_running == (killed,)
    assert [(t.vals, t.loss, t.status) for t in found.trials] == [
        ({"x": 0.4}, 0.4, "ok"),
        ({"x": 0.2}, 0.2, "ok"),
    ]


@pytest.mark.integration
def test_warm_start_reads_the_best_points_of_recent_finished_runs_of_the_key(
    mlflow_uri: str, experiment_name: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(experiment_name)
    night1 = parent(client, experiment_id, "scheduled__1", status="FINISHED")
    for tid, x in enumerate([0.5, 0.3, 0.3]):
        trial(client, experiment_id, night1, tid, x)
    failed_night = parent(client, experiment_id, "scheduled__2", status="FAILED")
    trial(client, experiment_id, failed_night, 0, 0.01)
    other_key = parent(client, experiment_id, "scheduled__3", status="FINISHED", key="d.other")
    trial(client, experiment_id, other_key, 0, 0.02)
    tonight = parent(client, experiment_id, "scheduled__4", status="FINISHED")  # this night's earlier try
    trial(client, experiment_id, tonight, 0, 0.03)

    source = warm_start_source(
        client, experiment_id, tuning_key="d.t", k=2, exclude_tags={"airflow.run_id": "scheduled__4"}
    )
    assert source.parent_run_ids == (night1,)
    assert [t.vals["x"] for t in source.points] == [0.3, 0.5]  # best first, each point once


@pytest.mark.integration
def test_warm_start_reads_only_the_three_most_recent_finished_runs(
    mlflow_uri: str, experiment_name: str
) -> None:
    """Four successful nights: the oldest holds the best point and is not read; a newer night that
    failed or was killed holds better points still, and is not read either."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(experiment_name)
    day_ms = 24 * 3600 * 1000
    start = 1_780_000_000_000
    nights = []
    for night, x in enumerate([0.05, 0.4, 0.3, 0.2]):  # oldest first; the oldest is the best
        run = parent(
            client, experiment_id, f"scheduled__{night}", "FINISHED", start_time=start + night * day_ms
        )
        trial(client, experiment_id, run, 0, x)
        nights.append(run)
    for night, (status, x) in enumerate([("FAILED", 0.01), ("KILLED", 0.02)], start=4):
        run = parent(client, experiment_id, f"scheduled__{night}", status, start_time=start + night * day_ms)
        trial(client, experiment_id, run, 0, x)

    source = warm_start_source(
        client, experiment_id, tuning_key="d.t", k=5, exclude_tags={"airflow.run_id": "tonight"}
    )
    assert source.parent_run_ids == (nights[3], nights[2], nights[1])  # newest first
    assert [t.vals["x"] for t in source.points] == [0.2, 0.3, 0.4]


class CountingClient:
    """A real MlflowClient that counts the runs its searches return."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.runs_read = 0

    def search_runs(self, *args: Any, **kwargs: Any) -> Any:
        page = self.client.search_runs(*args, **kwargs)
        self.runs_read += len(page)
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.mark.integration
def test_warm_start_reads_the_best_trial_runs_of_a_night_not_all_of_them(
    mlflow_uri: str, experiment_name: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(experiment_name)
    night = parent(client, experiment_id, "scheduled__1", status="FINISHED")
    losses = [(tid * 7919 % 60) / 60 for tid in range(60)]  # 60 distinct losses in a shuffled order
    for tid, x in enumerate(losses):
        trial(client, experiment_id, night, tid, x)
    trial(client, experiment_id, night, 60, -1.0, status="RUNNING")  # cut off mid-write: not a point
    counting = CountingClient(client)

    source = warm_start_source(counting, experiment_id, tuning_key="d.t", k=3, exclude_tags={})
    assert [t.vals["x"] for t in source.points] == sorted(losses)[:3]
    assert counting.runs_read <= 1 + 2 * max(10, 4 * 3)  # the parent, and at most two pages of trial runs


@pytest.mark.integration
def test_a_resumed_try_finds_every_trial_of_the_earlier_tries_across_pages(
    mlflow_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setattr(history, "PAGE_SIZE", 2)
    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(experiment_name)
    first = parent(client, experiment_id, "manual__1", status="FAILED")
    for tid in range(5):
        trial(client, experiment_id, first, tid, tid / 10)
    second = parent(client, experiment_id, "manual__1", status="FAILED")
    for tid in range(3):
        trial(client, experiment_id, second, tid, 1 + tid / 10)
    current = parent(client, experiment_id, "manual__1")

    tries = earlier_tries(
        client, experiment_id, attempt_tags={"airflow.run_id": "manual__1"}, current_parent=current
    )
    assert sorted(t.vals["x"] for t in tries.trials) == [0.0, 0.1, 0.2, 0.3, 0.4, 1.0, 1.1, 1.2]


@pytest.mark.unit
def test_best_distinct_keeps_the_first_of_equal_points() -> None:
    trials = [
        EarlierTrial({"x": 1}, "ok", 0.1, "a"),
        EarlierTrial({"x": 1}, "ok", 0.2, "b"),
        EarlierTrial({"x": 2}, "ok", 0.3, "c"),
    ]
    assert [t.source_run_id for t in best_distinct(trials, 5)] == ["a", "c"]


@pytest.mark.integration
def test_a_point_two_tries_both_finished_is_resumed_once(mlflow_uri: str, experiment_name: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(experiment_name)
    zombie = parent(client, experiment_id, "manual__1", status="FAILED", start_time=1_000)
    for tid, x in enumerate([0.1, 0.2, 0.2]):  # one try may repeat a point: each was a trial of its own
        trial(client, experiment_id, zombie, tid, x)
    second = parent(client, experiment_id, "manual__1", status="FAILED", start_time=2_000)
    for tid, x in enumerate([0.1, 0.3]):  # the warm-start point 0.1, evaluated by both tries side by side
        trial(client, experiment_id, second, tid, x)
    current = parent(client, experiment_id, "manual__1", start_time=3_000)

    attempt = {"airflow.dag_id": "d", "airflow.task_id": "t", "airflow.run_id": "manual__1"}
    found = earlier_tries(client, experiment_id, attempt_tags=attempt, current_parent=current)
    assert found.parent_run_ids == (zombie, second)
    assert [t.vals["x"] for t in found.trials] == [0.1, 0.2, 0.2, 0.3]


@pytest.mark.integration
def test_previous_best_loss_is_the_lowest_of_earlier_finished_runs_of_the_key(
    mlflow_uri: str, experiment_name: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(experiment_name)

    def night(run_id: str, best: float | None, status: str = "FINISHED", key: str = "d.t") -> str:
        created = parent(client, experiment_id, run_id, key=key)
        if best is not None:
            client.log_metric(created, "best_loss", best)
        client.set_terminated(created, status=status)
        return created

    def previous(current: str, airflow_run_id: str) -> float | None:
        return previous_best_loss(
            client,
            experiment_id,
            tuning_key="d.t",
            current_run=current,
            exclude_tags={"airflow.run_id": airflow_run_id},
        )

    first = night("scheduled__1", 0.5)
    assert previous(first, "scheduled__1") is None  # the first night has nothing to beat
    night("scheduled__2", 0.3)
    night("scheduled__3", 0.4)
    night("scheduled__4", 0.1, status="FAILED")  # a failed night set no record
    night("scheduled__5", 0.05, key="other.key")
    night("scheduled__6", None)  # no best_loss (cut off before its summary)
    earlier_try = night("scheduled__7", 0.01)  # an earlier try of tonight's run
    tonight = night("scheduled__7", 0.35)
    assert previous(tonight, "scheduled__7") == pytest.approx(0.3)
    assert previous(earlier_try, "scheduled__8") == pytest.approx(0.3)
