from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_sparktune.tracking import trials_artifact
from airflow_provider_sparktune.tracking.tracker import TuningTracker
from airflow_provider_sparktune.tracking.trials_artifact import part_count, part_name, read_trials
from tests.tracking.test_tracker import record, result_of


@pytest.mark.unit
def test_parts_are_named_in_order_and_a_run_without_trials_has_one() -> None:
    assert [part_count(n, 3) for n in (0, 1, 3, 4, 7)] == [1, 1, 1, 2, 3]
    assert sorted(part_name(i) for i in (10, 2, 0)) == [part_name(0), part_name(2), part_name(10)]
    assert part_name(2) == "trials/part-00002.jsonl"


@pytest.mark.integration
def test_the_trial_list_is_written_in_parts_and_read_back_whole(
    mlflow_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setattr(trials_artifact, "PART_RECORDS", 2)
    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="parts", tags={})
    records = [record(0, loss=2.0), record(1, "failed", None), record(2, loss=0.5), record(3, loss=0.7)]
    records.append(record(4, loss=0.1))
    tracker.finish(result_of(records))

    client = MlflowClient(mlflow_uri)
    names = sorted(f.path for f in client.list_artifacts(tracker.run_id, "trials"))
    assert names == [part_name(0), part_name(1), part_name(2)]
    lines = [
        json.loads(line)
        for name in names
        for line in open(client.download_artifacts(tracker.run_id, name)).read().splitlines()
    ]
    assert [t["tid"] for t in lines] == [0, 1, 2, 3, 4]
    assert "trials.json" not in {f.path for f in client.list_artifacts(tracker.run_id)}
    trials = read_trials(client, tracker.run_id)
    assert trials == [r.to_dict() for r in records]
    assert [t["status"] for t in trials] == ["ok", "failed", "ok", "ok", "ok"]


@pytest.mark.integration
def test_a_run_written_before_the_parts_is_read_from_its_trials_json(
    mlflow_uri: str, experiment_name: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    tracker = TuningTracker(mlflow_uri, experiment_name)
    tracker.start(run_name="before the parts", tags={})
    old: list[Any] = [record(0, loss=1.0).to_dict(), record(1, "failed", None).to_dict()]
    client.log_dict(tracker.run_id, old, "trials.json")
    assert read_trials(client, tracker.run_id) == old
    tracker.start(run_name="nothing yet", tags={})
    assert read_trials(client, tracker.run_id) == []
