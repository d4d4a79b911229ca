from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airflow_provider_sparktune.tracking.store import (
    LockPatientClient,
    is_locked_error,
    sqlite_path,
    wait_out_lock,
)
from airflow_provider_sparktune.tracking.tracker import log_through_root

REPO = Path(__file__).resolve().parents[2]

# Each process opens the same fresh store at the same instant, as tuning tasks started together by
# the scheduler do: the parent run of a task try, then one write per trial.
TASK = textwrap.dedent(
    """
    import sys, time
    from airflow_provider_sparktune.tracking.tracker import TuningTracker
    uri, start_at, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    while time.time() < start_at:
        time.sleep(0.001)
    tracker = TuningTracker(uri, "shared-experiment")
    tracker.start(run_name=name, tags={"task": name})
    for step in range(25):
        tracker.client.log_metric(tracker.run_id, "loss", float(step), step=step)
    tracker.client.set_terminated(tracker.run_id)
    """
)


def locked() -> Exception:
    """What MLflow raises for a write that lost SQLite's lock (its store wraps the driver error)."""
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as err:
            raise MlflowException("(sqlite3.OperationalError) database is locked") from err
    except MlflowException as wrapped:
        return wrapped


@pytest.mark.integration
def test_tasks_opening_a_fresh_store_together_all_succeed(tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "mlflow.db"
    uri = f"sqlite:///{db}"
    start_at = time.time() + 8  # every process has imported MLflow by then
    tasks = [
        subprocess.Popen(
            [sys.executable, "-c", TASK, uri, str(start_at), f"task-{i}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(4)
    ]
    outputs = [task.communicate(timeout=180)[0].decode() for task in tasks]
    assert [task.returncode for task in tasks] == [0] * 4, "\n---\n".join(outputs)

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("shared-experiment")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["task"] for r in runs) == [f"task-{i}" for i in range(4)]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(25))
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.with_name("mlflow.db.lock").exists()


@pytest.mark.unit
def test_locked_errors_are_recognised_through_wrapping() -> None:
    assert is_locked_error(locked())
    assert not is_locked_error(ValueError("no such table: experiments"))


@pytest.mark.unit
def test_a_locked_call_is_retried_until_it_goes_through() -> None:
    attempts: list[float] = []

    def write() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise locked()
        return "written"

    assert wait_out_lock(write, "a write") == "written"
    assert len(attempts) == 3


@pytest.mark.unit
def test_other_errors_and_a_lock_held_too_long_are_raised() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("bad param")

    with pytest.raises(ValueError, match="bad param"):
        wait_out_lock(broken, "a write")
    assert calls == [1]

    def always_locked() -> None:
        raise locked()

    started = time.monotonic()
    with pytest.raises(Exception, match="database is locked"):
        wait_out_lock(always_locked, "a write", timeout_s=0.5)
    assert time.monotonic() - started < 2.0


@pytest.mark.unit
def test_patient_client_retries_every_method_and_passes_attributes() -> None:
    class Flaky:
        tracking_uri = "sqlite:////x.db"

        def __init__(self) -> None:
            self.calls = 0

        def create_run(self, experiment_id: str) -> str:
            self.calls += 1
            if self.calls == 1:
                raise locked()
            return f"run in {experiment_id}"

    flaky = Flaky()
    client = LockPatientClient(flaky)
    assert client.create_run("7") == "run in 7"
    assert flaky.calls == 2
    assert client.tracking_uri == "sqlite:////x.db"


@pytest.mark.unit
def test_only_sqlite_uris_have_a_database_file(tmp_path: Path) -> None:
    assert sqlite_path(f"sqlite:///{tmp_path}/m.db") == tmp_path / "m.db"
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("postgresql://u@h/db") is None


@pytest.mark.unit
def test_mlflow_logs_reach_the_root_logger_not_stderr(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    log_through_root()
    with caplog.at_level(logging.INFO):
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        logging.getLogger("mlflow.store.db.utils").error("SQLAlchemy database error", exc_info=locked())
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "Creating initial MLflow database tables...")
    ]
    assert "MLflow" not in capfd.readouterr().err


TELEMETRY_CHILD = """
from airflow_provider_sparktune.tracking.tracker import log_through_root
log_through_root()
import os
from mlflow.telemetry.client import get_telemetry_client
print(get_telemetry_client() is None, os.environ["MLFLOW_DISABLE_TELEMETRY"])
"""


@pytest.mark.unit
@pytest.mark.parametrize(("preset", "expected"), [(None, "True true"), ("false", "false")])
def test_mlflow_telemetry_is_off_in_a_task_process_unless_asked_for(
    preset: str | None, expected: str
) -> None:
    ci_markers = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TRAVIS")
    env = {k: v for k, v in os.environ.items() if k not in ci_markers and k != "MLFLOW_DISABLE_TELEMETRY"}
    if preset is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = preset
    done = subprocess.run(
        [sys.executable, "-c", TELEMETRY_CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].endswith(expected)  # the user's own choice is kept
