"""Resident tasks over Spark Connect: a real Connect server from pyspark's jars on a loopback port."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airflow_provider_sparktune import run_tuning
from airflow_provider_sparktune.data.staged import StagedData
from airflow_provider_sparktune.data.staging import plan_dataset
from airflow_provider_sparktune.exceptions import (
    SparkConnectionError,
    TuningCancelledError,
    TuningConfigError,
)
from airflow_provider_sparktune.tuning.dispatch.launch import (
    CALLBACK_BIND_CONF,
    CALLBACK_HOST_CONF,
    CALLBACK_TIMEOUT_CONF,
    _python_mismatch,
    _server_endpoint,
    is_connect,
    refuse_sparktrials_on_connect,
    task_slots,
)
from airflow_provider_sparktune.tuning.run import RunControl
from airflow_provider_sparktune.tuning.space import space_facts
from tests.servers import spark_connect_server

SPACE = {"x": {"hp": "uniform", "low": -3, "high": 3}}


def bowl(params: dict[str, Any]) -> dict[str, Any]:
    import os

    return {"loss": (params["x"] - 1) ** 2, "status": "ok", "metrics": {"pid": float(os.getpid())}}


# PySpark's worker, started with another Python than the client's, says exactly this.
WORKER_MISMATCH = (
    "[PYTHON_EXCEPTION] An exception was thrown from the Python worker: Traceback (most recent call last):\n"
    "pyspark.errors.exceptions.base.PySparkRuntimeError: [PYTHON_VERSION_MISMATCH] Python in worker has "
    "different version: 3.12 than that in driver: 3.11, PySpark cannot run with different minor versions."
)


@pytest.mark.unit
def test_a_python_version_mismatch_names_both_versions_and_the_fix() -> None:
    error = _python_mismatch(RuntimeError(WORKER_MISMATCH))
    assert error is not None
    message = str(error)
    assert "server runs Python 3.12" in message and "client runs Python 3.11" in message
    assert "PYSPARK_PYTHON" in message
    assert _python_mismatch(RuntimeError("[PYTHON_EXCEPTION] ZeroDivisionError: division by zero")) is None


@pytest.mark.unit
def test_a_connect_client_that_hides_its_server_asks_for_the_callback_host() -> None:
    from types import SimpleNamespace

    with pytest.raises(
        SparkConnectionError, match=rf"set {CALLBACK_HOST_CONF} to an address of this machine"
    ):
        _server_endpoint(SimpleNamespace(client=SimpleNamespace()))  # a client without its channel builder


@pytest.mark.unit
def test_sparktrials_is_refused_on_connect_naming_dispatcher() -> None:
    with pytest.raises(TuningConfigError, match="^dispatcher: 'sparktrials' needs a classic SparkContext"):
        refuse_sparktrials_on_connect("sparktrials")
    refuse_sparktrials_on_connect("resident")


@pytest.mark.integration
def test_is_connect_tells_the_two_sessions_apart(spark: Any, connect_spark: Any) -> None:
    assert is_connect(connect_spark) and not is_connect(spark)


@pytest.mark.integration
def test_trials_run_on_the_connect_servers_executors(connect_spark: Any) -> None:
    result = run_tuning(SPACE, bowl, spark=connect_spark, max_evals=8, parallelism="auto", seed=3)
    assert task_slots(connect_spark) == 2  # the server runs local[2]
    assert result.spec.parallelism == min(space_facts(SPACE).suggested_parallelism(2), 8)
    assert (result.trials_total, result.trials_ok) == (8, 8)
    assert result.best_loss == min(r.loss for r in result.records if r.loss is not None)
    assert result.best_loss < 1.0
    pids = {int(r.metrics["pid"]) for r in result.records}
    assert os.getpid() not in pids  # evaluated in the server's Python workers, not here
    assert type(result.trials).__name__ == "Trials"  # SparkTrials cannot hold a Connect session


@pytest.mark.integration
def test_sparktrials_dispatcher_on_a_connect_session_fails_before_any_trial(connect_spark: Any) -> None:
    with pytest.raises(TuningConfigError, match="^dispatcher: 'sparktrials'"):
        run_tuning(SPACE, bowl, spark=connect_spark, max_evals=2, parallelism=1, dispatcher="sparktrials")


def sleep_with_marker(params: dict[str, Any], marker_dir: str) -> float:
    import os
    import time

    with open(os.path.join(marker_dir, f"{os.getpid()}-{time.monotonic_ns()}"), "w") as out:
        out.write(str(os.getpid()))
    time.sleep(600)
    return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.integration
def test_cancel_interrupts_the_connect_query_and_its_sleeping_trials(
    connect_spark: Any, tmp_path: Path
) -> None:
    control = RunControl()
    outcome: dict[str, Any] = {}

    def tune() -> None:
        try:
            run_tuning(
                SPACE,
                sleep_with_marker,
                spark=connect_spark,
                max_evals=6,
                parallelism=2,
                control=control,
                objective_kwargs={"marker_dir": str(tmp_path)},
            )
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=tune)
    thread.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len([p for p in tmp_path.iterdir() if p.read_text()]) < 2:
        time.sleep(0.2)
    workers = {int(p.read_text()) for p in tmp_path.iterdir() if p.read_text()}
    assert len(workers) == 2, "both trials should be sleeping on the server"
    cancelled_at = time.monotonic()
    control.cancel("killed")
    thread.join(60)
    assert not thread.is_alive(), "the run did not end within 60 s of the cancel"
    assert isinstance(outcome.get("error"), TuningCancelledError)
    while time.monotonic() - cancelled_at < 60 and any(_alive(pid) for pid in workers):
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers), "the sleeping trials outlived the interrupt"
    assert connect_spark.interruptTag(control.job_group) == []  # nothing of the run is left on the server


@pytest.fixture
def connect_conf(connect_spark: Any) -> Iterator[Any]:
    """Set callback settings on the shared Connect session for one test only."""
    keys = (CALLBACK_HOST_CONF, CALLBACK_BIND_CONF, CALLBACK_TIMEOUT_CONF)
    yield connect_spark.conf
    for key in keys:
        connect_spark.conf.unset(key)


@pytest.mark.integration
def test_executors_that_cannot_reach_the_client_fail_with_one_clear_error(
    connect_spark: Any, connect_conf: Any
) -> None:
    connect_conf.set(CALLBACK_HOST_CONF, "sparktune-unreachable.invalid")  # no such host: nothing is sent
    connect_conf.set(CALLBACK_BIND_CONF, "127.0.0.1")
    with pytest.raises(SparkConnectionError) as caught:
        run_tuning(SPACE, bowl, spark=connect_spark, max_evals=4, parallelism=2)
    message = str(caught.value)
    assert message.startswith("no resident trial task connected back to sparktune-unreachable.invalid:")
    assert "the tasks failed before any reached this machine, with: " in message
    assert message.split("with: ")[1].startswith("socket.gaierror: ")  # the tasks' own error, not a frame
    assert CALLBACK_HOST_CONF in message


@pytest.mark.integration
def test_no_task_connecting_back_within_the_bound_fails_instead_of_hanging(
    connect_spark: Any, connect_conf: Any
) -> None:
    connect_conf.set(CALLBACK_TIMEOUT_CONF, "0.001")  # no Spark task starts and connects that fast
    started = time.monotonic()
    with pytest.raises(
        SparkConnectionError, match=r"^no resident trial task connected back .* within 0.001 s"
    ):
        run_tuning(SPACE, bowl, spark=connect_spark, max_evals=4, parallelism=2)
    assert time.monotonic() - started < 60


def data_sum_objective(params: dict[str, Any], data: Any = None) -> float:
    return float(np.asarray(data.value).sum()) + abs(params["x"])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "features.npy"
    np.save(path, np.arange(1000, dtype=np.float64))  # sums to 499500
    return path


@pytest.mark.integration
@pytest.mark.parametrize(
    ("threshold", "mode", "how"),
    [
        ("1GiB", "broadcast", "uploaded once as a Spark Connect artifact"),
        ("1B", "reload", "trials read it from storage"),
    ],
    ids=["broadcast-as-artifact", "reload"],
)
def test_staged_data_reaches_the_trials_over_connect(
    connect_spark: Any, dataset: Path, threshold: str, mode: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    staged = StagedData.open(plan_dataset(str(dataset), threshold_bytes=threshold))
    staged_dirs = set(Path(tempfile.gettempdir()).glob("sparktune-staged-*"))
    with caplog.at_level(logging.INFO, logger="airflow_provider_sparktune.data.staged"):
        result = run_tuning(
            SPACE, data_sum_objective, spark=connect_spark, max_evals=4, parallelism=2, data=staged
        )
    assert result.trials_ok == 4
    for record in result.records:
        assert record.loss == pytest.approx(499500 + abs(record.params["x"]))
    assert staged.plan.mode == mode
    assert any(how in line for line in [staged.plan.reason, *(r.getMessage() for r in caplog.records)])
    assert not staged.attached  # released when the run ended
    assert set(Path(tempfile.gettempdir()).glob("sparktune-staged-*")) == staged_dirs  # nothing left


@functools.cache
def other_python() -> str | None:
    """A Python of another minor version than this one, if the machine has one (its real executable:
    a version manager's shim may refuse to run outside its own shell set-up)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in (12, 13, 10, 11):
        if minor == sys.version_info.minor:
            continue
        found = shutil.which(f"python3.{minor}")
        installed = sorted(pyenv.glob(f"3.{minor}.*/bin/python3.{minor}"))
        for candidate in [*installed, *([found] if found else [])]:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if probe.returncode == 0 and probe.stdout.strip():
                return probe.stdout.strip()
    return None


@pytest.mark.integration
@pytest.mark.skipif(other_python() is None, reason="needs a Python of another minor version")
def test_a_server_on_another_python_fails_with_both_versions(tmp_path: Path) -> None:
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    python = other_python()
    assert python is not None
    with spark_connect_server(tmp_path, python=python) as server:
        session = ConnectSession.builder.remote(server.url).create()
        try:
            with pytest.raises(SparkConnectionError) as caught:
                run_tuning(SPACE, bowl, spark=session, max_evals=2, parallelism=1)
        finally:
            session.stop()
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"client runs Python {ours}" in str(caught.value)
    assert "the Spark Connect server runs Python 3." in str(caught.value)
