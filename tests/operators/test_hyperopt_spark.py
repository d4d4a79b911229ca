from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import (
    SearchSpaceError,
    StagingError,
    TrackingError,
    TuningCancelledError,
    TuningConfigError,
)
from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from tests.airflow_runs import scheduled_dag_run, tasks_test
from tests.dags.operator_runs import NIGHTLY_WARM_START_DAGS
from tests.servers import (
    VENV_BIN,
    ConnectServer,
    MlflowServer,
    RestartableMlflowServer,
    SparkCluster,
    airflow_cli,
    airflow_dags_test,
    free_port,
    kill_group,
    process_group,
)
from tests.spark_jobs import all_job_ids, jobs_started_since

TEST_DAGS = Path(__file__).resolve().parents[1] / "dags"
UNIT_SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}}


def x_objective(params: dict[str, Any], data: Any = None, offset: float = 0.0) -> float:
    return params["x"] + offset


def sleeping_objective(params: dict[str, Any]) -> float:
    time.sleep(120)
    return params["x"]


class StandInTaskInstance(SimpleNamespace):
    """Only what execute() reads from the task instance: try_number and xcom_push."""

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context() -> dict[str, Any]:
    return {"ti": StandInTaskInstance(try_number=1, pushed={}), "run_id": "manual__test"}


def xcom_values(run_id: str, task_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.run_id == run_id, XComModel.task_id == task_id).all()
        return {row.key: row.value for row in rows}


def task_log(run_id: str, captured: str = "") -> str:
    """What the task logged: Airflow's task log files of that DAG run, plus captured output."""
    logs = Path(os.environ["AIRFLOW_HOME"], "logs")
    files = (
        [p for p in logs.rglob("*") if p.is_file() and f"run_id={run_id}" in str(p)] if logs.exists() else []
    )
    return "\n".join([captured, *(p.read_text(errors="replace") for p in files)])


def runs_of(mlflow_uri: str, experiment: str, run_id: str | None = None) -> list[Any]:
    """Runs of an experiment; with ``run_id``, the parent runs of that Airflow DAG run only."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.`airflow.run_id` = '{run_id}'" if run_id else ""
    return client.search_runs([found.experiment_id], filter_string=query)


@pytest.mark.unit
def test_templated_fields_cover_space_kwargs_budget_and_experiment() -> None:
    fields = set(HyperoptSparkOperator.template_fields)
    assert {"search_space", "objective_kwargs", "mlflow_experiment", "max_evals", "parallelism"} <= fields
    assert "objective" not in fields  # an import path must not come from run conf


@pytest.mark.unit
def test_constructor_does_no_validation_or_io(tmp_path: Path) -> None:
    """Every one of these values is wrong; the constructor (DAG parsing) accepts them, execute() does not."""
    op = HyperoptSparkOperator(
        task_id="t",
        search_space={"x": {"hp": "integer"}},
        objective="no_such_pkg.mod:fn",
        max_evals=0,
        data=str(tmp_path / "missing.parquet"),
        spark_conn_id="no_such_connection",
        mlflow_conn_id="no_such_connection",
    )
    with pytest.raises(StagingError, match="^data '.*missing.parquet': no such file"):
        op.execute(context())  # type: ignore[arg-type]  # the first check in execute()'s order


@pytest.mark.unit
def test_bad_space_fails_before_tracking_or_spark() -> None:
    op = HyperoptSparkOperator(
        task_id="t", search_space={"x": {"hp": "uniform", "low": 1, "high": 0}}, objective=x_objective
    )
    with pytest.raises(SearchSpaceError, match=r"search_space\.x: low must be < high"):
        op.execute(context())  # type: ignore[arg-type]


@pytest.mark.unit
def test_rendered_budget_text_that_is_not_a_number_names_the_field() -> None:
    op = HyperoptSparkOperator(task_id="t", search_space=UNIT_SPACE, objective=x_objective, max_evals="ten")
    with pytest.raises(TuningConfigError, match="^max_evals: rendered to 'ten'"):
        op.execute(context())  # type: ignore[arg-type]


@pytest.mark.integration
def test_unreachable_mlflow_fails_before_any_trial(spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DOWN", json.dumps({"conn_type": "mlflow", "host": f"http://127.0.0.1:{port}"})
    )
    jobs_before = all_job_ids(spark)
    op = HyperoptSparkOperator(
        task_id="t", search_space=UNIT_SPACE, objective=x_objective, max_evals=2, mlflow_conn_id="mlflow_down"
    )
    with pytest.raises(TrackingError, match="unreachable"):
        op.execute(context())  # type: ignore[arg-type]
    assert jobs_started_since(spark, jobs_before) == set()  # no Spark job, in any job group


@pytest.mark.integration
def test_on_kill_cancels_the_trials_and_marks_runs_killed(
    spark: Any, mlflow_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    op = HyperoptSparkOperator(
        task_id="t",
        search_space=UNIT_SPACE,
        objective=sleeping_objective,
        max_evals=6,
        parallelism=2,
        mlflow_experiment=experiment_name,
    )
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        op.on_kill()

    killer = threading.Timer(5, kill)
    killer.start()
    with pytest.raises(TuningCancelledError):
        op.execute(context())  # type: ignore[arg-type]
    assert killed_at and time.monotonic() - killed_at[0] < 30 + 10  # the bound counts from the kill
    runs = runs_of(mlflow_uri, experiment_name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["KILLED"]
    assert all(r.info.status == "KILLED" for r in runs if r not in parents)
    deadline = time.monotonic() + 30
    while spark.sparkContext.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []


@pytest.mark.integration
def test_on_kill_over_spark_connect_interrupts_the_query_and_marks_runs_killed(
    connect_server: ConnectServer,
    mlflow_uri: str,
    experiment_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.tuning.test_launch import sleep_with_marker

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    monkeypatch.setenv("AIRFLOW_CONN_TUNE_CONNECT", connect_server.connection())
    op = HyperoptSparkOperator(
        task_id="t",
        search_space=UNIT_SPACE,
        objective=sleep_with_marker,
        objective_kwargs={"marker_dir": str(tmp_path)},
        max_evals=6,
        parallelism=2,
        spark_conn_id="tune_connect",
        mlflow_experiment=experiment_name,
    )
    killed_at: list[float] = []

    def kill_once_both_trials_sleep() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len([p for p in tmp_path.iterdir() if p.read_text()]) < 2:
            time.sleep(0.2)
        killed_at.append(time.monotonic())
        op.on_kill()

    killer = threading.Thread(target=kill_once_both_trials_sleep, daemon=True)
    killer.start()
    with pytest.raises(TuningCancelledError):
        op.execute(context())  # type: ignore[arg-type]
    assert killed_at and time.monotonic() - killed_at[0] < 30 + 10  # the trials sleep for ten minutes
    assert len(list(tmp_path.iterdir())) == 2  # the kill came while both were sleeping
    runs = runs_of(mlflow_uri, experiment_name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["KILLED"]
    trial_runs = [r for r in runs if r not in parents]
    assert len(trial_runs) == 2 and all(r.info.status == "KILLED" for r in trial_runs)


@pytest.mark.integration
def test_run_conf_drives_templated_space_and_budget(
    spark: Any, airflow_db: Any, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "templated_tuning.py")).get_dag("templated_tuning")
    run_conf = {
        "space": {"x": {"hp": "uniform", "low": 5, "high": 6}},
        "max_evals": 2,
        "spark_conf": {"spark.sql.shuffle.partitions": "3"},  # a resource setting is data
    }
    dag_run = dag.test(run_conf=run_conf)
    assert dag_run.state == "success"
    value = xcom_values(dag_run.run_id, "tune")["return_value"]
    assert value["trials"]["total"] == 2
    assert 7 <= value["best_loss"] <= 8  # x from the run conf space, in [5, 6], plus the offset
    parent = runs_of(mlflow_uri, "templated_tuning.tune", run_id=dag_run.run_id)[0]
    assert json.loads(parent.data.tags["sparktune.search_space"]) == run_conf["space"]
    assert parent.data.params["max_evals"] == "2"
    assert (parent.data.params["algo"], parent.data.params["dispatcher"]) == ("tpe", "resident")
    assert parent.data.tags["sparktune.stopped_reason"] == "max_evals"


def latest_run_id(dag_id: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        assert run is not None, f"no run of {dag_id}"
        return str(run.run_id)


# -- a real Spark standalone cluster and MLflow server, reached only through connections --------


@pytest.mark.integration
def test_trials_run_on_the_cluster_executors(
    spark_cluster: SparkCluster, mlflow_tracking_server: MlflowServer, airflow_db: Any, tmp_path: Path
) -> None:
    env = {
        "AIRFLOW_CONN_SPARK_DEFAULT": spark_cluster.connection(connect_timeout=90),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_tracking_server.connection(),
    }
    done = airflow_dags_test("cluster_probe", env, conf={"marker_dir": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    value = xcom_values(latest_run_id("cluster_probe"), "tune")["return_value"]
    assert value["trials"]["ok"] == 3
    assert value["mlflow"]["tracking_uri"] == mlflow_tracking_server.uri

    cwds = [Path(p.read_text()) for p in tmp_path.glob("*.txt")]
    assert len(cwds) == 3
    assert all(spark_cluster.work_dir in cwd.parents for cwd in cwds), cwds  # <work>/<app-id>/<executor-id>
    apps = spark_cluster.apps()
    names = [app["name"] for app in apps["completedapps"]]
    assert "sparktune-cluster_probe.tune" in names  # the hook created the session and stopped it
    assert apps["activeapps"] == []


@pytest.mark.integration
def test_master_down_fails_within_the_bound(
    mlflow_tracking_server: MlflowServer, airflow_db: Any, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    dead_master = json.dumps(
        {
            "conn_type": "spark",
            "host": "spark://127.0.0.1",
            "port": free_port(),
            "extra": {"connect_timeout": 10},
        }
    )
    env = {
        "AIRFLOW_CONN_SPARK_DEFAULT": dead_master,
        "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_tracking_server.connection(),
    }
    done = airflow_dags_test("cluster_probe", env, conf={"marker_dir": str(tmp_path)})
    output = done.stdout + done.stderr
    assert "no Spark executor registered with spark://127.0.0.1:" in output
    assert "within 10 s" in output
    assert list(tmp_path.glob("*.txt")) == []  # no trial ran
    client = MlflowClient(mlflow_tracking_server.uri)
    experiment = client.get_experiment_by_name("cluster_probe.tune")
    assert experiment is not None
    parent = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert parent.info.status == "FAILED"
    assert "no Spark executor registered" in parent.data.tags["sparktune.error"]
    # Timed inside the task (the parent run spans the wait), not around Airflow's and Python's start-up.
    waited = (parent.info.end_time - parent.info.start_time) / 1000
    assert 10 <= waited < 10 + 30, waited


# --------------------------------------------------------------------------------------------------
# data staging
# --------------------------------------------------------------------------------------------------


def mean_y(params: dict[str, Any], data: Any = None) -> float:
    frame = data.value
    return float((params["x"] - frame["y"].mean()) ** 2)


def features(path: Path, rows: int = 200) -> Path:
    import numpy as np
    import pandas as pd

    pd.DataFrame({"x": np.linspace(0, 1, rows), "y": np.full(rows, 0.25)}).to_parquet(path)
    return path


def parent_run(mlflow_uri: str, experiment: str) -> Any:
    return next(r for r in runs_of(mlflow_uri, experiment) if "mlflow.parentRunId" not in r.data.tags)


@pytest.mark.unit
def test_data_and_threshold_are_templated() -> None:
    assert {"data", "data_format", "broadcast_threshold_bytes"} <= set(HyperoptSparkOperator.template_fields)
    op = HyperoptSparkOperator(
        task_id="t", search_space=UNIT_SPACE, objective=mean_y, data="{{ plan | tojson }}", dag=None
    )
    plan = {"uri": "/data/f.parquet", "mode": "reload"}
    assert json.loads(op.render_template(op.data, {"plan": plan})) == plan  # rendered by Airflow's Jinja


@pytest.mark.unit
def test_missing_data_fails_before_tracking_or_spark(tmp_path: Path) -> None:
    from airflow_provider_sparktune.exceptions import StagingError

    op = HyperoptSparkOperator(
        task_id="t", search_space=UNIT_SPACE, objective=mean_y, data=str(tmp_path / "nope.parquet")
    )
    with pytest.raises(StagingError, match=rf"data '{tmp_path}/nope.parquet': no such file or directory"):
        op.execute(context())  # type: ignore[arg-type]


@pytest.mark.unit
def test_builtin_objective_without_data_fails_before_spark() -> None:
    from airflow_provider_sparktune.exceptions import ObjectiveError

    op = HyperoptSparkOperator(
        task_id="t",
        search_space={"n_estimators": {"hp": "quniform", "low": 10, "high": 20, "q": 10}},
        objective={"estimator": "sklearn.ensemble.GradientBoostingClassifier", "target": "label"},
    )
    with pytest.raises(ObjectiveError, match="trains on data, and none was given; pass data="):
        op.execute(context())  # type: ignore[arg-type]


@pytest.mark.integration
def test_a_uri_is_planned_and_the_plan_lands_in_xcom_mlflow_and_the_log(
    spark: Any,
    mlflow_uri: str,
    experiment_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import structlog.testing

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    path = features(tmp_path / "features.parquet")
    size = path.stat().st_size
    op = HyperoptSparkOperator(
        task_id="t",
        search_space=UNIT_SPACE,
        objective=mean_y,
        data=str(path),
        broadcast_threshold_bytes=str(size - 1),  # rendered templates are text
        max_evals=3,
        parallelism=2,
        seed=1,
        mlflow_experiment=experiment_name,
    )
    with structlog.testing.capture_logs() as task_log:
        value = op.execute(context())  # type: ignore[arg-type]
    assert value["staging"]["mode"] == "reload"
    assert value["staging"]["uri"] == str(path) and value["staging"]["size_bytes"] == size
    assert value["staging"]["threshold_bytes"] == size - 1
    assert value["best_loss"] < 0.1
    json.dumps(value, allow_nan=False)
    parent = parent_run(mlflow_uri, experiment_name)
    assert parent.data.params["staging_mode"] == "reload"
    assert parent.data.params["staging_uri"] == str(path)
    assert parent.data.params["staging_size_bytes"] == str(size)
    assert parent.data.params["staging_format"] == "parquet"
    assert parent.data.params["staging_threshold_bytes"] == str(size - 1)
    assert "not below the broadcast threshold" in parent.data.tags["sparktune.staging_reason"]
    assert any("staged by reload" in entry["event"] for entry in task_log)


@pytest.mark.integration
def test_a_sensor_plan_as_rendered_template_text_is_used_as_it_is(
    spark: Any,
    mlflow_uri: str,
    experiment_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow_provider_sparktune.data.staging import plan_dataset

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    plan = plan_dataset(str(features(tmp_path / "features.parquet"))).to_dict()
    op = HyperoptSparkOperator(
        task_id="t",
        search_space=UNIT_SPACE,
        objective=mean_y,
        data=str(plan),  # what "{{ ti.xcom_pull(task_ids='wait_for_data') }}" renders to
        max_evals=3,
        parallelism=2,
        seed=1,
        mlflow_experiment=experiment_name,
    )
    with caplog.at_level(logging.INFO, logger="airflow_provider_sparktune.data.staged"):
        value = op.execute(context())  # type: ignore[arg-type]
    assert value["staging"] == plan and plan["mode"] == "broadcast"
    assert parent_run(mlflow_uri, experiment_name).data.params["staging_mode"] == "broadcast"
    staging_log = [
        r.getMessage() for r in caplog.records if r.name == "airflow_provider_sparktune.data.staged"
    ]
    assert any(
        line.endswith("the driver's staged copy removed") for line in staging_log
    )  # when the run ended


# -- nothing lost: a killed try is resumed by the next one ------------------------------------------


def trial_runs(mlflow_uri: str, parent_run_id: str, status: str | None = "FINISHED") -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    return [r for r in runs if status is None or r.info.status == status]


def second_try_of(dag_id: str, task_id: str, run_id: str) -> int:
    """What the scheduler does when a task's process died and it has a retry left: record the try,
    mark it up for retry, then schedule the next try. Returns the new try number."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id, TaskInstance.run_id == run_id
            )
        )
        assert ti is not None
        assert (ti.state, ti.try_number) == (TaskInstanceState.RUNNING, 1)  # killed: nobody cleaned up
        ti.prepare_db_for_next_try(session)
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.merge(ti)
        return int(ti.try_number)


@pytest.mark.integration
def test_a_killed_try_is_resumed_by_the_next_try(airflow_db: Any, tmp_path: Path) -> None:
    """SIGKILL the task process half way, then run the second try of the same task instance.

    Try 1 is ``airflow dags test`` in its own process group, killed (with its Spark JVM) once three
    trials are in MLflow. Try 2 is the same task instance after the scheduler's retry bookkeeping
    (``second_try_of``), run by ``airflow tasks test DAG TASK RUN_ID``, which runs the task
    instance as stored, with try_number 2.
    """
    from mlflow import MlflowClient

    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri})}
    cmd = [str(VENV_BIN / "airflow"), "dags", "test", "resumable_tuning", "2026-02-01"]
    client = MlflowClient(mlflow_uri)
    with process_group(cmd, env, tmp_path / "try1.log") as first:
        deadline = time.monotonic() + 240
        done: list[Any] = []
        while len(done) < 3:
            assert first.poll() is None, (tmp_path / "try1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "three trials did not finish in time"
            time.sleep(0.5)
            experiment = client.get_experiment_by_name("resumable_tuning.tune")
            if experiment is not None:
                runs = client.search_runs([experiment.experiment_id])
                done = [
                    r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"
                ]
        kill_group(first)
    runs = client.search_runs([experiment.experiment_id])
    [parent1] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent1.info.status == "RUNNING"  # SIGKILL: no cleanup ran
    run_id = parent1.data.tags["airflow.run_id"]
    first_trials = trial_runs(mlflow_uri, parent1.info.run_id)
    assert 3 <= len(first_trials) < 8

    assert second_try_of("resumable_tuning", "tune", run_id) == 2
    second = airflow_cli(["tasks", "test", "resumable_tuning", "tune", run_id], env)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]

    parents = [
        r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags
    ]
    [parent2] = [r for r in parents if r.info.run_id != parent1.info.run_id]
    assert parent2.data.tags["airflow.try_number"] == "2"
    assert parent2.data.tags["sparktune.resumed_from"] == parent1.info.run_id
    assert int(parent2.data.tags["sparktune.resumed_trials"]) == len(first_trials)
    assert client.get_run(parent1.info.run_id).info.status == "FAILED"  # closed by the try that took over
    assert parent2.info.status == "FINISHED"
    second_trials = trial_runs(mlflow_uri, parent2.info.run_id)
    assert len(first_trials) + len(second_trials) == 8  # only the remaining trials ran
    all_vals = {r.data.tags["sparktune.vals"] for r in first_trials + second_trials}
    assert len(all_vals) == 8  # distinct trials, none run twice
    value = xcom_values(run_id, "tune")["return_value"]
    assert value["trials"]["total"] == 8
    assert value["mlflow"]["run_id"] == parent2.info.run_id
    losses = [r.data.metrics["loss"] for r in first_trials + second_trials]
    assert value["best_loss"] == pytest.approx(min(losses))  # the best covers both tries
    assert float(parent2.data.metrics["trials_total"]) == 8


# -- nightly warm start -------------------------------------------------------------------------


@pytest.mark.integration
def test_nightly_warm_start_begins_with_last_nights_best_points(
    spark: Any, airflow_db: Any, mlflow_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real DAG runs: a manual run starts cold, a scheduled one warm starts by default."""
    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    client = MlflowClient(mlflow_uri)
    dag = DagBag(dag_folder=str(TEST_DAGS / "operator_runs.py")).get_dag("nightly_warm_start")

    def parent_and_trials(run_id: str) -> tuple[Any, list[Any]]:
        value = xcom_values(run_id, "tune")["return_value"]
        parent = client.get_run(value["mlflow"]["run_id"])
        assert parent.data.tags["airflow.run_id"] == run_id
        trials = sorted(
            trial_runs(mlflow_uri, parent.info.run_id), key=lambda r: int(r.data.tags["sparktune.tid"])
        )
        return parent, trials

    night = pendulum.datetime(2026, 3, 1, tz="UTC")
    manual = dag.test(logical_date=night, run_conf={"experiment": experiment_name})
    assert manual.state == "success" and manual.run_type == "manual"
    first, first_trials = parent_and_trials(manual.run_id)
    assert "sparktune.warm_start.from_runs" not in first.data.tags  # manual runs start cold by default
    best = sorted(first_trials, key=lambda r: r.data.metrics["loss"])[:2]

    # The next night, scheduled; the objective moved by +1 since, so re-evaluated losses differ.
    conf = {"experiment": experiment_name, "offset": 1.0}
    run_id = scheduled_dag_run("nightly_warm_start", night.add(days=1), conf)
    assert tasks_test("nightly_warm_start", "tune", run_id) == "success"
    second, second_trials = parent_and_trials(run_id)
    assert second.data.tags["sparktune.warm_start.from_runs"] == first.info.run_id
    assert second.data.tags["sparktune.warm_start.trials"] == "2"
    assert [r.data.params["x"] for r in second_trials[:2]] == [r.data.params["x"] for r in best]
    assert [r.data.tags["sparktune.origin"] for r in second_trials] == ["warm_start"] * 2 + ["new"] * 3
    assert [r.data.tags["sparktune.source_run"] for r in second_trials[:2]] == [r.info.run_id for r in best]
    assert [r.data.metrics["loss"] for r in second_trials[:2]] == [
        pytest.approx(r.data.metrics["loss"] + 1.0) for r in best
    ]  # evaluated again under today's objective, not copied

    # The space changed: the best point so far now lies below the new lower bound and is dropped.
    candidates = sorted(first_trials + second_trials, key=lambda r: r.data.metrics["loss"])
    distinct = list({r.data.params["x"]: r for r in candidates}.values())[:2]
    low = (float(distinct[0].data.params["x"]) + float(distinct[1].data.params["x"])) / 2
    changed = {"x": {"hp": "uniform", "low": low, "high": 1}}
    conf = {"experiment": experiment_name, "offset": 1.0, "space": changed}
    run_id = scheduled_dag_run("nightly_warm_start", night.add(days=2), conf)
    assert tasks_test("nightly_warm_start", "tune", run_id) == "success"
    third, third_trials = parent_and_trials(run_id)
    assert set(third.data.tags["sparktune.warm_start.from_runs"].split(",")) == {
        first.info.run_id,
        second.info.run_id,
    }
    assert third.data.tags["sparktune.warm_start.trials"] == "1"
    dropped = json.loads(third.data.tags["sparktune.warm_start.dropped"])
    assert [d["vals"]["x"] for d in dropped] == [float(distinct[0].data.params["x"])]
    assert "is outside" in dropped[0]["reason"]
    assert third_trials[0].data.params["x"] == distinct[1].data.params["x"]
    assert third_trials[0].data.tags["sparktune.origin"] == "warm_start"


@pytest.mark.integration
@pytest.mark.parametrize("algo", list(NIGHTLY_WARM_START_DAGS))
def test_a_resumed_try_does_not_evaluate_a_warm_start_point_again(
    spark: Any,
    airflow_db: Any,
    mlflow_uri: str,
    experiment_name: str,
    monkeypatch: pytest.MonkeyPatch,
    algo: str,
) -> None:
    """Tonight's first try was killed after it evaluated last night's best point; the second try
    resumes that trial and warm starts from the second best point only, whatever the searcher (an
    Optuna sampler is told the resumed trial and asked the warm-start point as an enqueued trial)."""
    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    client = MlflowClient(mlflow_uri)
    dag_id = NIGHTLY_WARM_START_DAGS[algo].dag_id
    dag = DagBag(dag_folder=str(TEST_DAGS / "operator_runs.py")).get_dag(dag_id)
    night = pendulum.datetime(2026, 4, 1, tz="UTC")
    last_night = dag.test(logical_date=night, run_conf={"experiment": experiment_name})
    assert last_night.state == "success"
    source = xcom_values(last_night.run_id, "tune")["return_value"]["mlflow"]["run_id"]
    best = sorted(trial_runs(mlflow_uri, source), key=lambda r: r.data.metrics["loss"])[:2]

    # The first try of tonight's scheduled run, as a SIGKILL left it in MLflow: its parent RUNNING,
    # one complete trial run, the warm-start evaluation of last night's best point.
    run_id = scheduled_dag_run(dag_id, night.add(days=1), {"experiment": experiment_name})
    experiment_id = client.get_experiment_by_name(experiment_name).experiment_id
    tags = {"airflow.dag_id": dag_id, "airflow.task_id": "tune", "airflow.run_id": run_id}
    killed = client.create_run(
        experiment_id,
        tags={**tags, "airflow.try_number": "1", "sparktune.tuning_key": f"{dag_id}.tune"},
    ).info.run_id
    done = client.create_run(
        experiment_id,
        tags={
            "mlflow.parentRunId": killed,
            "sparktune.tid": "0",
            "sparktune.status": "ok",
            "sparktune.vals": best[0].data.tags["sparktune.vals"],
            "sparktune.origin": "warm_start",
            "sparktune.source_run": best[0].info.run_id,
        },
    ).info.run_id
    client.log_metric(done, "loss", best[0].data.metrics["loss"])
    client.set_terminated(done, status="FINISHED")

    assert tasks_test(dag_id, "tune", run_id) == "success"
    value = xcom_values(run_id, "tune")["return_value"]
    parent = client.get_run(value["mlflow"]["run_id"])
    assert parent.data.params["algo"] == algo
    assert parent.data.tags["sparktune.resumed_from"] == killed
    assert client.get_run(killed).data.tags["sparktune.superseded_by"] == parent.info.run_id
    assert client.get_run(killed).info.status == "FAILED"
    assert parent.data.tags["sparktune.warm_start.trials"] == "1"  # best[0] was evaluated by try 1
    new = sorted(trial_runs(mlflow_uri, parent.info.run_id), key=lambda r: int(r.data.tags["sparktune.tid"]))
    assert len(new) == 4 and value["trials"]["total"] == 5  # one resumed, four run now
    assert new[0].data.tags["sparktune.origin"] == "warm_start"
    assert new[0].data.tags["sparktune.vals"] == best[1].data.tags["sparktune.vals"]
    warm = [r.data.tags["sparktune.vals"] for r in new if r.data.tags["sparktune.origin"] == "warm_start"]
    assert best[0].data.tags["sparktune.vals"] not in warm  # (unscrambled QMC may propose it anew)


# -- MLflow going away in the middle of a run -----------------------------------------------------


def wait_for_trials(uri: str, experiment: str, count: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len([r for r in runs_of(uri, experiment) if "mlflow.parentRunId" in r.data.tags]) >= count:
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{count} trial runs did not appear within {timeout_s} s")


def finished_trials(marks: Path) -> list[tuple[float, float]]:
    """(start, end) wall-clock times of the trials that wrote a complete line to ``marks``."""
    if not marks.exists():
        return []
    lines = [line.split() for line in marks.read_text().splitlines()]
    return [(float(line[0]), float(line[1])) for line in lines if len(line) == 2]


@pytest.mark.integration
def test_mlflow_restarting_mid_run_loses_nothing(
    spark: Any,
    airflow_db: Any,
    mlflow_outage_server: RestartableMlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real DAG run; the tracking server goes away mid-run and trials keep starting and finishing."""
    from airflow.dag_processing.dagbag import DagBag

    caplog.set_level("WARNING", logger="airflow_provider_sparktune.tracking.write_queue")
    server = mlflow_outage_server
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", server.connection())
    marks, gate = tmp_path / "trials.txt", tmp_path / "mlflow-is-down"
    outage: dict[str, Any] = {}

    def take_mlflow_away() -> None:
        try:
            wait_for_trials(server.uri, "restart", 2)
            server.stop()
            outage["stopped"] = time.time()
            gate.touch()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # poll: until two trials ran entirely while MLflow was down
                if len([s for s, _ in finished_trials(marks) if s > outage["stopped"]]) >= 2:
                    break
                time.sleep(0.2)
        finally:
            outage["restarted"] = time.time()
            server.start()

    watcher = threading.Thread(target=take_mlflow_away, daemon=True)
    watcher.start()
    dag = DagBag(dag_folder=str(TEST_DAGS / "operator_runs.py")).get_dag("mlflow_outage")
    conf = {"experiment": "restart", "outage": {"marks": str(marks), "gate": str(gate), "hold_after": 2}}
    dag_run = dag.test(run_conf=conf)
    watcher.join(60)
    assert dag_run.state == "success"
    during = [(s, e) for s, e in finished_trials(marks) if outage["stopped"] < s and e < outage["restarted"]]
    assert len(during) >= 2, (outage, finished_trials(marks))  # the run went on without MLflow
    value = xcom_values(dag_run.run_id, "tune")["return_value"]
    assert value["trials"]["total"] == 12
    runs = runs_of(server.uri, "restart")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(int(r.data.tags["sparktune.tid"]) for r in trials) == list(range(12))  # every trial, once
    assert all(r.info.status == "FINISHED" for r in trials)
    assert float(parents[0].data.metrics["trials_total"]) == 12
    logged = task_log(dag_run.run_id, capfd.readouterr().out + "\n".join(caplog.messages))
    assert "retrying with backoff" in logged


@pytest.mark.integration
def test_mlflow_that_never_returns_fails_the_task_with_the_result_kept(
    spark: Any,
    airflow_db: Any,
    mlflow_outage_server: RestartableMlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A real DAG run whose task fails: Airflow keeps the XCom the task pushed before failing."""
    from airflow.dag_processing.dagbag import DagBag

    server = mlflow_outage_server
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", server.connection())
    marks, gate = tmp_path / "trials.txt", tmp_path / "mlflow-is-down"

    def take_mlflow_away() -> None:
        try:
            wait_for_trials(server.uri, "gone", 1)
        finally:
            server.stop()
            gate.touch()  # only then may the later trials finish

    watcher = threading.Thread(target=take_mlflow_away, daemon=True)
    watcher.start()
    dag = DagBag(dag_folder=str(TEST_DAGS / "operator_runs.py")).get_dag("mlflow_never_returns")
    outage = {"marks": str(marks), "gate": str(gate), "hold_after": 1}
    dag_run = dag.test(run_conf={"experiment": "gone", "outage": outage})
    watcher.join(60)
    assert dag_run.state == "failed"
    output = task_log(dag_run.run_id, capfd.readouterr().out)
    assert "mlflow_conn_id: " in output and "never reached" in output and "mlflow_retry_timeout=3" in output
    pushed = xcom_values(dag_run.run_id, "tune")  # from the metadata DB, after the task failed
    assert pushed["return_value"]["trials"]["total"] == 4  # the best result is still in XCom
    assert pushed["best_params"] == pushed["return_value"]["best_params"]
    marker = "every trial of this run, as JSON: "
    [logged] = [line for line in output.splitlines() if marker in line]
    trials = json.loads(logged.split(marker, 1)[1].rsplit("] [airflow.task", 1)[0] + "]")
    assert sorted(t["tid"] for t in trials) == list(range(4))
    assert min(t["loss"] for t in trials) == pytest.approx(pushed["return_value"]["best_loss"])


# -- bad input: one clear error naming the argument, before any Spark job, no run left RUNNING ----------


def spark_conn(**fields: Any) -> str:
    return json.dumps({"conn_type": "spark", **fields})


BAD_INPUT: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    # (case id, operator arguments, connections (AIRFLOW_CONN_<ID> suffix -> JSON), error starts with)
    ("search_space-wrong-type", {"search_space": 42}, {}, "search_space: int given"),
    ("search_space-garbage-template", {"search_space": "{{ not json"}, {}, "search_space: not valid JSON"),
    ("search_space-unknown-hp", {"search_space": {"x": {"hp": "integer"}}}, {}, "search_space.x.hp: unknown"),
    (
        "search_space-out-of-range",
        {"search_space": {"x": {"hp": "uniform", "low": 1, "high": 0}}},
        {},
        "search_space.x: low",
    ),
    ("objective-wrong-type", {"objective": 42}, {}, "objective: expected"),
    ("objective-missing-module", {"objective": "no_such_pkg.mod:fn"}, {}, "objective: cannot import"),
    ("objective-template", {"objective": "{{ params.objective }}"}, {}, "objective: "),
    ("objective_kwargs-wrong-type", {"objective_kwargs": "[1, 2]"}, {}, "objective_kwargs: expected a dict"),
    ("objective_kwargs-unknown-key", {"objective_kwargs": {"nope": 1}}, {}, "objective_kwargs: "),
    ("max_evals-garbage-template", {"max_evals": "ten"}, {}, "max_evals: rendered to 'ten'"),
    ("max_evals-out-of-range", {"max_evals": 0}, {}, "max_evals: 0 must be"),
    ("max_evals-wrong-type", {"max_evals": 2.5}, {}, "max_evals: 2.5 must be"),
    ("parallelism-out-of-range", {"parallelism": 500}, {}, "parallelism: 500 is above"),
    ("parallelism-wrong-type", {"parallelism": True}, {}, "parallelism: True must be"),
    ("algo-unknown", {"algo": "bayes"}, {}, "algo: unknown algorithm"),
    ("algo-wrong-type", {"algo": 3}, {}, "algo: unknown algorithm"),
    ("seed-out-of-range", {"seed": -1}, {}, "seed: -1 must be"),
    ("seed-garbage-template", {"seed": "abc"}, {}, "seed: rendered to 'abc'"),
    ("timeout-out-of-range", {"timeout": 0}, {}, "timeout: 0 must be"),
    ("timeout-garbage-template", {"timeout": "soon"}, {}, "timeout: rendered to 'soon'"),
    ("loss_threshold-garbage-template", {"loss_threshold": "low"}, {}, "loss_threshold: rendered to 'low'"),
    ("early_stop_after-out-of-range", {"early_stop_after": 0}, {}, "early_stop_after: 0 must be"),
    ("dispatcher-unknown", {"dispatcher": "fast"}, {}, "dispatcher: unknown dispatcher"),
    ("max_failed_trials-out-of-range", {"max_failed_trials": 0}, {}, "max_failed_trials: 0 must be"),
    ("max_failed_trials-garbage-template", {"max_failed_trials": "x"}, {}, "max_failed_trials: rendered to"),
    ("max_failure_ratio-out-of-range", {"max_failure_ratio": 2}, {}, "max_failure_ratio: 2 must be"),
    ("pruner-unknown", {"pruner": "hyperband"}, {}, "pruner: unknown pruner 'hyperband'"),
    ("pruner-garbage-template", {"pruner": "{oops"}, {}, "pruner: rendered to text that is not a JSON"),
    ("pruner-bad-setting", {"pruner": '{"name": "median", "patience": 1}'}, {}, "pruner.patience: not a"),
    ("pruner-sparktrials", {"pruner": "median", "dispatcher": "sparktrials"}, {}, "pruner: 'median' needs"),
    ("warm_start-garbage-template", {"warm_start": "maybe"}, {}, "warm_start: 'maybe' is not a boolean"),
    ("warm_start_k-out-of-range", {"warm_start_k": 0}, {}, "warm_start_k: 0 must be"),
    ("warm_start_k-garbage-template", {"warm_start_k": "many"}, {}, "warm_start_k: rendered to 'many'"),
    ("tuning_key-injection", {"tuning_key": "k' or '1'='1"}, {}, "tuning_key: "),
    ("tuning_key-wrong-type", {"tuning_key": 7}, {}, "tuning_key: 7 must be"),
    ("mlflow_retry_timeout-out-of-range", {"mlflow_retry_timeout": -1}, {}, "mlflow_retry_timeout: -1"),
    ("mlflow_experiment-wrong-type", {"mlflow_experiment": 42}, {}, "mlflow_experiment: 42 must be"),
    ("mlflow_experiment-empty", {"mlflow_experiment": "  "}, {}, "mlflow_experiment: '  ' must be"),
    ("spark_conf-wrong-type", {"spark_conf": [1, 2]}, {}, "spark_conf: list given"),
    ("spark_conf-garbage-template", {"spark_conf": "{oops"}, {}, "spark_conf: rendered to text"),
    ("spark_connect_timeout-out-of-range", {"spark_connect_timeout": -5}, {}, "spark_connect_timeout: -5"),
    (
        "spark_connect_timeout-wrong-type",
        {"spark_connect_timeout": "soon"},
        {},
        "spark_connect_timeout: rendered",
    ),
    ("spark_conn_id-empty", {"spark_conn_id": ""}, {}, "spark_conn_id: '' must be"),
    (
        "spark_conn_id-unknown-type",
        {"spark_conn_id": "bad"},
        {"BAD": json.dumps({"conn_type": "http", "host": "x"})},
        "spark_conn_id: connection 'bad' has type 'http'",
    ),
    (
        "dispatcher-sparktrials-over-spark-connect",
        {"spark_conn_id": "bad", "dispatcher": "sparktrials"},
        {"BAD": spark_conn(host="sc://127.0.0.1", port=15002)},
        "dispatcher: 'sparktrials' needs a classic SparkContext",
    ),
    (
        "spark_conn_id-extra-conf",
        {"spark_conn_id": "bad"},
        {"BAD": spark_conn(host="local[2]", extra={"spark_conf": [1]})},
        "spark_conn_id: the extra",
    ),
    (
        "spark_conn_id-extra-timeout",
        {"spark_conn_id": "bad"},
        {"BAD": spark_conn(host="local[2]", extra={"connect_timeout": "soon"})},
        "spark_conn_id: extra connect_timeout",
    ),
    ("mlflow_conn_id-empty", {"mlflow_conn_id": ""}, {}, "mlflow_conn_id: '' must be"),
    (
        "mlflow_conn_id-unknown-type",
        {"mlflow_conn_id": "bad"},
        {"BAD": json.dumps({"conn_type": "http", "host": "x"})},
        "mlflow_conn_id: connection 'bad' has type 'http'",
    ),
    (
        "mlflow_conn_id-empty-host",
        {"mlflow_conn_id": "bad"},
        {"BAD": json.dumps({"conn_type": "mlflow"})},
        "mlflow_conn_id 'bad': the connection's host is empty",
    ),
    (
        "mlflow_conn_id-unreachable",
        {"mlflow_conn_id": "bad"},
        {"BAD": "UNREACHABLE"},
        "mlflow_conn_id: MLflow tracking server",
    ),
]


def failing_x(params: dict[str, Any]) -> float:
    raise ValueError("the feature table is empty")


def nan_x(params: dict[str, Any]) -> float:
    return float("nan")


# Cases that pass every check before Spark and fail once the parent run exists and trials ran.
LATE_FAILURES: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    (
        "objective-fails-systematically",
        {"objective": failing_x, "max_evals": 8},
        {},
        "max_failed_trials: the first 3 trials all failed",
    ),
    (
        "objective-fails-every-trial",
        {"objective": failing_x, "max_failed_trials": None},
        {},
        "all 2 trials failed",
    ),
    ("objective-returns-nan", {"objective": nan_x, "max_failed_trials": None}, {}, "all 2 trials failed"),
]


def running_runs(mlflow_uri: str) -> set[str]:
    """Ids of every RUNNING run in the whole store, whatever the experiment."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(mlflow_uri)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=50000)
    return {r.info.run_id for r in runs}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("arguments", "connections", "expected", "late"),
    [(*case[1:], False) for case in BAD_INPUT] + [(*case[1:], True) for case in LATE_FAILURES],
    ids=[case[0] for case in BAD_INPUT + LATE_FAILURES],
)
def test_bad_input(
    spark: Any,
    mlflow_uri: str,
    experiment_name: str,
    monkeypatch: pytest.MonkeyPatch,
    arguments: dict[str, Any],
    connections: dict[str, str],
    expected: str,
    late: bool,
) -> None:
    from airflow_provider_sparktune.exceptions import SparktuneError

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    for conn_id, conn in connections.items():
        if conn == "UNREACHABLE":
            conn = json.dumps({"conn_type": "mlflow", "host": f"http://127.0.0.1:{free_port()}"})
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", conn)
    settings = {
        "search_space": UNIT_SPACE,
        "objective": x_objective,
        "max_evals": 2,
        "parallelism": 2,
        "mlflow_experiment": experiment_name,
        **arguments,
    }
    running_before = running_runs(mlflow_uri)
    jobs_before = all_job_ids(spark)
    op = HyperoptSparkOperator(task_id="t", **settings)
    with pytest.raises(SparktuneError) as caught:
        op.execute(context())  # type: ignore[arg-type]
    assert str(caught.value).startswith(expected), str(caught.value)
    assert running_runs(mlflow_uri) - running_before == set()  # nothing left RUNNING, anywhere in the store
    runs = runs_of(mlflow_uri, experiment_name)
    if late:
        assert jobs_started_since(spark, jobs_before)  # the trials ran: the failure came after Spark
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert [p.info.status for p in parents] == ["FAILED"]
        trials = [r.info.status for r in runs if r not in parents]
        assert len(trials) >= 2 and set(trials) == {"FAILED"}
    else:
        assert jobs_started_since(spark, jobs_before) == set()  # no Spark job, in any job group
        assert runs == []  # refused before tracking started


# -- run conf is data; secrets stay secret --------------------------------------------------------


@pytest.mark.integration
def test_run_conf_is_data(
    spark: Any, airflow_db: Any, mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    marker = tmp_path / "evaluated"
    code_like = f"__import__('os').system('touch {marker}')"
    space = {"x": {"hp": "uniform", "low": 0, "high": 1}, "note": "{{ 7 * 7 }}", "cmd": code_like}
    dag = DagBag(dag_folder=str(TEST_DAGS / "templated_tuning.py")).get_dag("templated_tuning")
    dag_run = dag.test(run_conf={"space": space, "max_evals": 2})
    assert dag_run.state == "success"
    value = xcom_values(dag_run.run_id, "tune")["return_value"]
    params = value["best_params"]
    assert params["note"] == "{{ 7 * 7 }}"  # data from run conf is not rendered again
    assert params["cmd"] == code_like and not marker.exists()  # nor evaluated


@pytest.mark.unit
def test_spark_conf_a_template_rendered_refuses_code_before_anything_starts() -> None:
    op = HyperoptSparkOperator(
        task_id="t",
        search_space=UNIT_SPACE,
        objective=x_objective,
        spark_conf={"spark.executor.memory": "1g", "spark.master": "{{ params.master }}"},
        spark_conn_id="no_such_connection",
        mlflow_conn_id="no_such_connection",
    )
    op.spark_conf = {"spark.executor.memory": "1g", "spark.master": "spark://elsewhere:7077"}  # as rendered
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.master: came from a rendered template"):
        op.execute(context())  # type: ignore[arg-type]
    assert "spark_hook" not in op.__dict__ and "mlflow_hook" not in op.__dict__  # no connection was read


@pytest.mark.integration
def test_run_conf_cannot_put_code_or_a_master_into_spark_conf(
    spark: Any,
    airflow_db: Any,
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The issue's case: a DAG fills spark_conf from params; a conf user sends a jar and a listener."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "templated_tuning.py")).get_dag("templated_tuning")
    jobs_before = all_job_ids(spark)
    conf = {"spark.jars": "/tmp/listener.jar", "spark.extraListeners": "org.example.Listener"}
    dag_run = dag.test(run_conf={"space": UNIT_SPACE, "max_evals": 2, "spark_conf": conf})
    assert dag_run.state == "failed"
    output = task_log(dag_run.run_id, capfd.readouterr().out)
    assert "spark_conf.spark.extraListeners: came from a rendered template" in output
    assert "(also refused: 'spark.jars')" in output
    assert "add 'spark.extraListeners' to allowed_templated_spark_conf" in output
    assert jobs_started_since(spark, jobs_before) == set()
    assert runs_of(mlflow_uri, "templated_tuning.tune", run_id=dag_run.run_id) == []


URI_PASSWORD = "sparktune-UriPassword-9e41c0"  # in a URI an objective's error message quotes
MASKED_VALUE = "sparktune-MaskedValue-2d7b13"  # a value Airflow's secrets masker knows (a connection's)


def quoting_objective(params: dict[str, Any]) -> float:
    if params["x"] < 0.5:
        raise OSError(f"cannot read ftp://ann:{URI_PASSWORD}@files/x.csv with key {MASKED_VALUE}")
    return params["x"]


@pytest.mark.integration
def test_objective_tracebacks_reach_mlflow_through_the_secrets_masker(
    spark: Any, mlflow_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.sdk.log import mask_secret
    from mlflow import MlflowClient

    mask_secret(MASKED_VALUE)  # as the task runner does for a connection's password
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    op = HyperoptSparkOperator(
        task_id="t",
        search_space=UNIT_SPACE,
        objective=quoting_objective,
        max_evals=8,
        parallelism=2,
        seed=3,
        max_failed_trials=None,
        mlflow_experiment=experiment_name,
    )
    value = op.execute(context())  # type: ignore[arg-type]
    assert 0 < value["trials"]["failed"] < 8
    client = MlflowClient(mlflow_uri)
    texts = mlflow_texts(
        client,
        [r for r in runs_of(mlflow_uri, experiment_name) if "mlflow.parentRunId" not in r.data.tags],
        tmp_path,
    )
    errors = [t for t in texts if b"cannot read ftp://files/x.csv" in t]
    assert errors and all(b"with key ***" in t for t in errors)  # the tags and trials.json say what failed
    assert not [t for t in texts if URI_PASSWORD.encode() in t or MASKED_VALUE.encode() in t]


# One secret per place the code reads one; the test fails if any of them shows up anywhere.
SPARK_SECRET = "sparktune-SparkConf-7f3a9c"  # a spark.* conf value in the spark connection's extra
MLFLOW_TOKEN = "sparktune-MlflowToken-41d2e8"  # the mlflow connection's password
FTP_LOGIN = "sparktune-FtpLogin-5b90aa"  # the fsspec connection's login
FTP_PASSWORD = "sparktune-FtpPassword-c3e177"  # the fsspec connection's password
FTP_ACCOUNT = "sparktune-FtpAccount-0d6b52"  # a storage option in the fsspec connection's extra
SECRETS = (SPARK_SECRET, MLFLOW_TOKEN, FTP_LOGIN, FTP_PASSWORD, FTP_ACCOUNT)


def mlflow_texts(client: Any, parents: list[Any], into: Path) -> list[bytes]:
    """Params, tags and run names of the parent runs and their trial runs, and every artifact's bytes."""
    texts: list[bytes] = []
    for parent in parents:
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        for run in [parent, *children]:
            texts.append(json.dumps([run.data.params, run.data.tags, run.info.run_name]).encode())
            local = Path(client.download_artifacts(run.info.run_id, "", str(into / run.info.run_id)))
            texts += [p.read_bytes() for p in local.rglob("*") if p.is_file()]
    return texts


@pytest.mark.integration
def test_secrets_of_every_connection_appear_nowhere(
    airflow_db: Any, mlflow_tracking_server: MlflowServer, tmp_path: Path
) -> None:
    """A task in its own process reads a secret from each connection type and writes none of them.

    The Spark secret sits in a ``spark.*`` conf key that Spark's default redaction covers, in a
    session the task builds from the connection; the MLflow token is checked by a proxy that
    refuses requests without it; the FTP server refuses the executors' reads without the fsspec
    connection's login and password (reload mode), from a URI that also carries them. Grepped: the task's output and log files, XCom,
    MLflow (params, tags, run names, artifacts) and the Spark event log.
    """
    import pandas as pd
    from mlflow import MlflowClient

    from tests.servers import ftp_server, token_checking_proxy

    served, events = tmp_path / "served", tmp_path / "events"
    served.mkdir()
    events.mkdir()
    pd.DataFrame({"x": [0.0, 0.5, 1.0] * 100, "y": [0.25] * 300}).to_parquet(served / "features.parquet")
    spark_conn = {
        "conn_type": "spark",
        "host": "local[2]",
        "extra": {
            "spark.hadoop.fs.s3a.secret.key": SPARK_SECRET,
            "spark_conf": {
                "spark.eventLog.enabled": "true",
                "spark.eventLog.dir": events.as_uri(),
                "spark.eventLog.compress": "false",  # plain JSON lines, to grep
            },
        },
    }
    with (
        token_checking_proxy(mlflow_tracking_server.uri, MLFLOW_TOKEN) as proxy,
        ftp_server(served, FTP_LOGIN, FTP_PASSWORD) as ftp,
    ):
        env = {
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_conn),
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {"conn_type": "mlflow", "host": proxy.uri, "password": MLFLOW_TOKEN}
            ),
            "AIRFLOW_CONN_FSSPEC_DEFAULT": json.dumps(
                {
                    "conn_type": "fsspec",
                    "host": "127.0.0.1",  # its login and password go to this host only
                    "port": ftp.port,  # and to this port only (none would mean FTP's default, 21)
                    "login": FTP_LOGIN,
                    "password": FTP_PASSWORD,
                    "extra": {"acct": FTP_ACCOUNT, "timeout": 60},
                }
            ),
        }
        # The URI itself carries the login and password too (a run conf user may write it so): every
        # copy of it that is written out (XCom, MLflow, logs) is without them.
        with_userinfo = ftp.uri("features.parquet").replace("ftp://", f"ftp://{FTP_LOGIN}:{FTP_PASSWORD}@")
        done = airflow_dags_test("secret_probe", env, conf={"data": with_userinfo})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run_id = latest_run_id("secret_probe")
    pushed = xcom_values(run_id, "tune")
    value = pushed["return_value"]
    # Each secret was really read: the trials read the data on the executors in reload mode through
    # the FTP server's login, MLflow was reached only through the proxy, Spark read its conf.
    assert value["staging"]["mode"] == "reload"
    assert value["trials"]["ok"] == 2 and value["best_loss"] < 0.5
    assert ftp.logins >= 3 and ftp.refused == 0  # the driver's plan and check, then each trial's read
    assert proxy.authorized > 0 and proxy.refused == 0
    event_logs = [p for p in events.rglob("events_*") if p.is_file()]
    assert event_logs, "Spark wrote no event log: the connection's conf did not reach the SparkContext"
    spark_events = [p.read_bytes() for p in event_logs]
    assert any(b"spark.hadoop.fs.s3a.secret.key" in text for text in spark_events)  # the key, redacted

    client = MlflowClient(mlflow_tracking_server.uri)
    parents = runs_of(mlflow_tracking_server.uri, "secret_probe.tune", run_id=run_id)
    assert [p.info.status for p in parents] == ["FINISHED"]
    from_mlflow = mlflow_texts(client, parents, tmp_path / "artifacts")
    assert any(b"staging_plan" in text or b"reload" in text for text in from_mlflow)
    places = {
        "task output": [(done.stdout + done.stderr).encode()],
        "task log files": [task_log(run_id).encode()],
        "XCom": [json.dumps(pushed, default=str).encode()],
        "MLflow": from_mlflow,
        "Spark event log": spark_events,
        "rendered fields (the UI)": [json.dumps(rendered_fields(run_id, "tune"), default=str).encode()],
    }
    assert "trial 2/2" in done.stdout + done.stderr + task_log(run_id)  # the task log was read
    found = [
        (place, secret)
        for place, texts in places.items()
        for secret in SECRETS
        if any(secret.encode() in text for text in texts)
    ]
    assert found == []


def rendered_fields(run_id: str, task_id: str) -> Any:
    """A task's rendered template fields as stored for the UI."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(TaskInstance.run_id == run_id, TaskInstance.task_id == task_id)
        ).one()
        return RenderedTaskInstanceFields.get_templated_fields(ti, session=session)


@pytest.mark.integration
def test_execution_timeout_kills_the_run_within_the_bound(
    spark: Any, airflow_db: Any, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Airflow run (dag.test): execution_timeout fires, running trials are cancelled, runs end KILLED."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.timeout_tuning import EXECUTION_TIMEOUT_S

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "timeout_tuning.py")).get_dag("timeout_tuning")
    dag_run = dag.test()
    assert dag_run.state == "failed"
    [parent] = runs_of(mlflow_uri, "timeout_tuning.tune", run_id=dag_run.run_id)
    trials = trial_runs(mlflow_uri, parent.info.run_id, status=None)
    assert parent.info.status == "KILLED"
    assert "AirflowTaskTimeout" in parent.data.tags["sparktune.error"]
    assert (
        parent.info.end_time - parent.info.start_time
    ) / 1000 < EXECUTION_TIMEOUT_S + 30  # killed within 30 s of the timeout
    assert trials and all(r.info.status == "KILLED" for r in trials)  # the running trials, cancelled
    assert len(trials) <= 2  # no new trial started after the kill
    deadline = time.monotonic() + 30
    while spark.sparkContext.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []


# -- asset events -----------------------------------------------------------------------------


def asset_events(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The asset events one DAG run emitted, from the metadata DB: the asset's URI and the extra."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent, AssetModel.uri)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
            .all()
        )
        return [{"uri": uri, "extra": event.extra} for event, uri in rows]


@pytest.mark.integration
@pytest.mark.parametrize("dag_id", ["asset_every_night", "asset_improving_nights"])
def test_a_successful_night_emits_its_xcom_value_as_the_asset_event(
    spark: Any,
    airflow_db: Any,
    mlflow_uri: str,
    experiment_name: str,
    dag_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "asset_events.py")).get_dag(dag_id)
    uri = f"sparktune://tuning/{dag_id}.tune"

    first = dag.test(run_conf={"experiment": experiment_name})
    assert first.state == "success"
    value = xcom_values(first.run_id, "tune")["return_value"]
    assert (value["improved"], value["previous_best_loss"]) == (True, None)  # the first night
    assert value["tuning_key"] == f"{dag_id}.tune"
    assert asset_events(dag_id, first.run_id) == [{"uri": uri, "extra": value}]
    assert json.loads(json.dumps(value, allow_nan=False)) == value

    worse = dag.test(run_conf={"experiment": experiment_name, "offset": 5.0})  # same points, loss + 5
    assert worse.state == "success"
    second = xcom_values(worse.run_id, "tune")["return_value"]
    assert second["improved"] is False
    assert second["previous_best_loss"] == pytest.approx(value["best_loss"])
    parent = MlflowClient(mlflow_uri).get_run(second["mlflow"]["run_id"])
    assert parent.data.tags["sparktune.improved"] == "false"
    assert float(parent.data.tags["sparktune.previous_best_loss"]) == pytest.approx(value["best_loss"])
    emitted = asset_events(dag_id, worse.run_id)
    if dag_id == "asset_every_night":
        assert emitted == [{"uri": uri, "extra": second}]
    else:  # emit_if_not_improved=False: a night that did not improve starts no consumer
        assert emitted == []
        assert "no asset event for sparktune://tuning/" in task_log(worse.run_id, capfd.readouterr().out)

    failed = dag.test(run_conf={"experiment": experiment_name, "fail": True})
    assert failed.state == "failed"
    assert asset_events(dag_id, failed.run_id) == []  # no event on failure
