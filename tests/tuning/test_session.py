"""A tuning session without Airflow: the MLflow record, resume and warm start a notebook user gets."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_sparktune import TrackingOptions, run_tuning
from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.tracking.store import open_client
from tests.tuning.test_run import UNIT_SPACE, shifted_x

pytestmark = pytest.mark.integration


def runs_of(uri: str, experiment: str) -> tuple[list[Any], list[Any]]:
    """(parent runs oldest first, trial runs) of an experiment."""
    client = open_client(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000, order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, trials


def test_run_tuning_records_resumes_and_warm_starts_like_the_operator(
    spark: Any, mlflow_uri: str, experiment_name: str
) -> None:
    def tune(run_key: str, offset: float, *, warm_start: bool = False, **settings: Any) -> Any:
        tracking = TrackingOptions(
            mlflow_uri,
            experiment_name,
            run_name=run_key,
            run_key=run_key,
            warm_start=warm_start,
            warm_start_k=2,
        )
        return run_tuning(
            UNIT_SPACE,
            shifted_x,
            spark=spark,
            tracking=tracking,
            objective_kwargs={"offset": offset},
            **settings,
        )

    night1 = tune("night-1", 0.0, max_evals=4, parallelism=2, seed=3)
    parents, trials = runs_of(mlflow_uri, experiment_name)
    assert len(parents) == 1 and len(trials) == 4
    first = parents[0]
    assert first.info.status == "FINISHED"
    assert first.data.tags["sparktune.run_key"] == "night-1"
    assert first.data.tags["sparktune.tuning_key"] == experiment_name  # the default key
    assert first.data.params["max_evals"] == "4" and first.data.params["staging_mode"] == "none"
    assert first.data.metrics["best_loss"] == night1.best_loss
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {first.info.run_id}

    # The same run key again: a retry. The four trials are resumed, not run again; two are new.
    retry = tune("night-1", 0.0, max_evals=6, parallelism=2, seed=3)
    assert [r.origin for r in retry.records] == ["resumed"] * 4 + ["new"] * 2
    assert [r.loss for r in retry.records[:4]] == [r.loss for r in night1.records]
    parents, _ = runs_of(mlflow_uri, experiment_name)
    assert parents[1].data.tags["sparktune.resumed_from"] == first.info.run_id

    # A new night with warm start: the two best points of the finished runs go first, evaluated again
    # with today's objective (the loss moved by the offset), not copied.
    best_two = sorted((r for r in retry.records if r.status == "ok"), key=lambda r: r.loss or 0)[:2]
    night2 = tune("night-2", 10.0, warm_start=True, max_evals=3, parallelism=1, seed=4)
    warm = [r for r in night2.records if r.origin == "warm_start"]
    assert [r.vals for r in warm] == [r.vals for r in best_two]
    assert [r.loss for r in warm] == pytest.approx([(r.loss or 0) + 10.0 for r in best_two])
    parents, _ = runs_of(mlflow_uri, experiment_name)
    assert "sparktune.resumed_from" not in parents[2].data.tags  # another run key: nothing to resume
    assert set(parents[2].data.tags["sparktune.warm_start.from_runs"].split(",")) == {
        parents[0].info.run_id,
        parents[1].info.run_id,
    }


def test_a_bad_tuning_key_is_refused_before_anything_runs(mlflow_uri: str) -> None:
    with pytest.raises(TuningConfigError, match=r"^tuning_key: \"x' or 1\" may hold only"):
        TrackingOptions(mlflow_uri, "e", tuning_key="x' or 1")


def test_the_spark_session_starts_while_mlflow_is_set_up_and_start_up_and_drain_are_reported(
    spark: Any, mlflow_uri: str, experiment_name: str
) -> None:
    import threading
    import time

    from airflow_provider_sparktune.tuning.prepare import prepare_run
    from airflow_provider_sparktune.tuning.session import TuningSession

    made: dict[str, Any] = {}

    def make_spark() -> Any:  # a session that takes a second to start, as a JVM does
        made["at"], made["thread"] = time.time(), threading.current_thread()
        time.sleep(1.0)
        return spark

    prepared = prepare_run(
        UNIT_SPACE, shifted_x, objective_kwargs={"offset": 0.0}, max_evals=3, parallelism=2, seed=1
    )
    started_at = time.time()
    session = TuningSession(prepared, TrackingOptions(mlflow_uri, experiment_name))
    result = session.run(make_spark, started_at=started_at)
    [parent], trials = runs_of(mlflow_uri, experiment_name)
    assert made["thread"] is not threading.main_thread()
    assert made["at"] * 1000 <= parent.info.start_time  # asked for before the parent run existed
    assert len(trials) == 3 and parent.info.status == "FINISHED"
    first_trial = min(r.started_at or 0 for r in result.records)
    assert result.startup_s == pytest.approx(first_trial - started_at)
    assert result.startup_s >= 1.0  # no trial before the session existed
    assert parent.data.metrics["startup_s"] == result.startup_s
    assert result.drain_s is not None and 0 <= result.drain_s < result.duration_s + 60
