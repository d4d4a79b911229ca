"""The resident dispatcher: an executor lost mid-trial on a real cluster, and what its channel refuses."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import SparkCluster, process_group

DRIVER = """
import json, sys
from pyspark.sql import SparkSession
from airflow_provider_sparktune.tuning.session import run_tuning

master, marker_dir, out = sys.argv[1:4]
spark = (
    SparkSession.builder.master(master).appName("sparktune-executor-loss")
    .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.enabled", "false").getOrCreate()
)

def objective(params, marker_dir):
    import os, time, uuid
    with open(os.path.join(marker_dir, uuid.uuid4().hex + ".pid"), "w") as marks:
        marks.write(str(os.getpid()))
    time.sleep(3)
    return params["x"]

result = run_tuning(
    {"x": {"hp": "uniform", "low": 0, "high": 1}}, objective, spark=spark,
    objective_kwargs={"marker_dir": marker_dir}, max_evals=6, parallelism=2, seed=0,
)
with open(out, "w") as done:
    json.dump({"total": result.trials_total, "ok": result.trials_ok, "failed": result.trials_failed,
               "lost": result.trials_lost, "errors": [r.error for r in result.records if r.error]}, done)
spark.stop()
"""


def parent_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def executor_of(python_worker_pid: int) -> int:
    """The executor JVM above a trial's Python worker (worker <- pyspark daemon <- executor)."""
    pid = python_worker_pid
    for _ in range(3):
        pid = parent_pid(pid)
        if b"CoarseGrainedExecutorBackend" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError(f"no executor process above Python worker {python_worker_pid}")


@pytest.mark.integration
def test_an_executor_lost_mid_trial_runs_its_trials_again_and_the_run_completes(
    spark_cluster: SparkCluster, tmp_path: Path
) -> None:
    markers, out = tmp_path / "markers", tmp_path / "result.json"
    markers.mkdir()
    cmd = [sys.executable, "-c", DRIVER, spark_cluster.master_url, str(markers), str(out)]
    with process_group(cmd, {"PYSPARK_PYTHON": sys.executable}, tmp_path / "driver.log") as driver:
        deadline = time.monotonic() + 180
        written: list[str] = []
        while not written:  # a marker can exist before its pid is written: wait for the content
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial started on the cluster"
            time.sleep(0.2)
            written = [text for text in (m.read_text().strip() for m in markers.glob("*.pid")) if text]
        worker_pid = int(written[0])
        executor = executor_of(worker_pid)
        killed_at = time.time()
        os.kill(executor, signal.SIGKILL)  # the executor dies with trials running on it
        driver.wait(300)
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    result = json.loads(out.read_text())
    assert result["total"] == 6
    assert 1 <= result["lost"] <= 2, result  # the trials that ran on the lost executor, run again
    assert (result["ok"], result["failed"]) == (6, 0), result["errors"]
    started = list(markers.glob("*.pid"))  # a trial lost before its objective began wrote none
    assert len(started) >= result["ok"] + 1  # the lost attempt began, and so did its re-run
    assert any(m.stat().st_mtime > killed_at for m in started)  # tasks came back on a new executor
    assert spark_cluster.apps()["activeapps"] == []


# -- the trial channel: a real dispatcher and its trial book, the executor's side played by the test --


class Channel:
    """A resident dispatcher listening for tasks, with no Spark job started: the test connects instead."""

    def __init__(self, spark: Any, max_evals: int = 4) -> None:
        from airflow_provider_sparktune.tuning.dispatch.base import DispatchPlan
        from airflow_provider_sparktune.tuning.dispatch.channel import listen
        from airflow_provider_sparktune.tuning.dispatch.resident import ResidentDispatcher
        from airflow_provider_sparktune.tuning.dispatch.trials import TrialBook
        from airflow_provider_sparktune.tuning.prepare import prepare_run
        from airflow_provider_sparktune.tuning.stopping import StopRules

        prepared = prepare_run(
            {"x": {"hp": "uniform", "low": 0, "high": 1}},
            lambda p: p["x"],
            max_evals=max_evals,
            parallelism=2,
        )
        spec = prepared.spec.resolved(prepared.facts, 2)
        self.dispatcher = ResidentDispatcher(
            DispatchPlan(
                spark=spark,
                book=TrialBook(spark, 2, None),
                objective=prepared.objective,
                space=prepared.space,
                suggest=prepared.suggest,
                spec=spec,
                stops=StopRules(spec),
                pruner=None,
                job_group="sparktune-test-channel",
            )
        )
        self.dispatcher._listener = listen("127.0.0.1", 2)
        self.address = self.dispatcher._listener.address
        threading.Thread(target=self.dispatcher._accept, daemon=True).start()

    def client(self, key: bytes | None = None) -> Any:
        """A task's connection, made in a thread: None when it did not get through within 5 s."""
        from multiprocessing.connection import Client

        made: list[Any] = []

        def connect() -> None:
            try:
                made.append(Client(self.address, authkey=key or self.dispatcher.authkey))
            except Exception as err:
                made.append(err)

        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(5)
        if made and isinstance(made[0], Exception):
            raise made[0]
        return made[0] if made else None

    def trial(self, tid: int) -> dict[str, Any]:
        found = self.dispatcher.book.find(tid)
        assert found is not None
        return found

    def close(self) -> None:
        self.dispatcher._close_listener(self.address)


@pytest.fixture
def channel(spark: Any) -> Iterator[Channel]:
    made = Channel(spark)
    yield made
    made.close()


@pytest.mark.integration
def test_an_idle_connection_holds_up_no_task_and_a_wrong_key_is_logged(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    from multiprocessing import AuthenticationError

    idle = socket.create_connection(channel.address)  # connects and never says a word
    try:
        conn = channel.client()
        assert conn is not None, "a task could not connect while an idle connection was open"
        conn.send_bytes(b'["ready"]')
        assert conn.recv()[0] == "trial"
        conn.close()
        with caplog.at_level(logging.WARNING), pytest.raises(AuthenticationError):
            channel.client(b"x" * 32)
    finally:
        idle.close()
    deadline = time.monotonic() + 5
    while "wrong key" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "refused a connection to the trial channel from 127.0.0.1:" in caplog.text
    assert "wrong key" in caplog.text


@pytest.mark.integration
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        pytest.param(b"\x80\x04K\x01.", "a message that is not JSON", id="pickle"),
        pytest.param(
            b'["ok", 99, {"loss": 1.0}, 0.1]', "a result for trial 99 while it was running trial 0", id="tid"
        ),
        pytest.param(b'["ok", 0, {"status": "ok"}, 0.1]', "loss None: not a finite number", id="no-loss"),
        pytest.param(b'{"loss": 1.0}', "not a [kind, ...] list", id="shape"),
        pytest.param(b'["ready"]', "a 'ready' message instead of the trial's result", id="kind"),
        pytest.param(b'["ok", 0, {"loss": 1.0}, 0.1' + b" " * (1 << 20) + b"]", "a message over", id="huge"),
    ],
)
def test_a_reply_that_breaks_the_rules_fails_that_trial_with_the_reason(
    channel: Channel, reply: bytes, reason: str
) -> None:
    from hyperopt import base

    conn = channel.client()
    assert conn is not None
    conn.send_bytes(b'["ready"]')
    _, tid, _, _ = conn.recv()
    assert tid == 0
    try:
        conn.send_bytes(reply)
    except OSError:  # over the cap: the driver read the length and hung up before the rest arrived
        assert len(reply) > 1 << 20
    deadline = time.monotonic() + 10
    while channel.trial(tid)["state"] == base.JOB_STATE_RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    trial = channel.trial(tid)
    assert trial["state"] == base.JOB_STATE_ERROR
    kind, text = trial["misc"]["error"]
    assert kind == "channel" and reason in text, text
    assert tid not in channel.dispatcher.running
    with pytest.raises((EOFError, OSError)):  # the driver hung up on the broken peer
        conn.recv()


def objective_with_a_model(params: dict[str, float]) -> Any:
    """Returns its fitted model (a lock stands for it: no JSON, no pickle) for half the points."""
    if params["x"] < 0.5:
        return {"loss": params["x"], "model": threading.Lock()}
    return params["x"]


@pytest.mark.integration
def test_a_result_with_a_model_in_it_fails_that_trial_with_a_clear_message(spark: Any) -> None:
    from airflow_provider_sparktune.tuning.session import run_tuning

    space = {"x": {"hp": "uniform", "low": 0, "high": 1}}
    result = run_tuning(
        space, objective_with_a_model, spark=spark, max_evals=8, parallelism=2, seed=0, timeout=120
    )
    failed = [r for r in result.records if r.status == "failed"]
    ok = [r for r in result.records if r.status == "ok"]
    assert failed and ok and len(failed) + len(ok) == 8, [(r.status, r.error) for r in result.records]
    assert all(r.vals["x"] < 0.5 and "returned key(s) 'model'" in (r.error or "") for r in failed)
    assert all("save models" in (r.error or "") for r in failed)


@pytest.mark.integration
def test_an_error_while_the_driver_serves_a_trial_fails_that_trial_not_the_run(spark: Any) -> None:
    from hyperopt import hp
    from hyperopt.pyll import scope

    from airflow_provider_sparktune.tuning.session import run_tuning

    @scope.define
    def sparktune_test_locked(x: float) -> Any:
        return {"x": x, "lock": threading.Lock()} if x < 0.5 else {"x": x}  # a lock cannot be sent

    space = scope.sparktune_test_locked(hp.uniform("x", 0, 1))
    result = run_tuning(space, lambda p: p["x"], spark=spark, max_evals=8, parallelism=2, seed=0, timeout=60)
    by_status = {s: [r for r in result.records if r.status == s] for s in ("ok", "failed", "cancelled")}
    assert result.trials_total == len(result.records) == 8  # every trial is accounted for
    assert not by_status["cancelled"], [r.error for r in by_status["cancelled"]]  # none left running
    assert by_status["failed"] and by_status["ok"]
    for record in by_status["failed"]:
        assert "the driver failed while serving this trial: TypeError" in (record.error or ""), record.error


def objective_reporting_from_threads(params: dict[str, float], trial: Any) -> float:
    """Callbacks of a boosting library report from their own threads: here eight at once."""

    def callbacks() -> None:
        for _ in range(40):
            trial.report(params["x"], 0)

    threads = [threading.Thread(target=callbacks) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return params["x"]


@pytest.mark.integration
def test_reports_from_several_threads_of_one_objective_do_not_interleave(spark: Any) -> None:
    from airflow_provider_sparktune.tuning.session import run_tuning

    space = {"x": {"hp": "uniform", "low": 0, "high": 1}}
    result = run_tuning(
        space, objective_reporting_from_threads, spark=spark, max_evals=6, parallelism=2, seed=0,
        pruner="median", timeout=180,
    )  # fmt: skip
    assert [r.status for r in result.records] == ["ok"] * 6, [r.error for r in result.records]
    assert all(len(r.curve) == 320 for r in result.records)


class StateWatch(dict):  # type: ignore[type-arg]
    """A trial's ``misc``: notes the trial's state at the moment its error text is set."""

    def __init__(self, trial: dict[str, Any]) -> None:
        super().__init__(trial["misc"])
        self.trial = trial
        self.state_at_error: list[int] = []

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "error":
            self.state_at_error.append(self.trial["state"])
        super().__setitem__(key, value)


@pytest.mark.integration
def test_a_failed_or_cancelled_trial_has_its_error_text_before_its_state(channel: Channel) -> None:
    """The run's watcher reads trial documents without the lock: a failed state with no error yet
    would be recorded as a failure without its reason."""
    from hyperopt import base

    channel.dispatcher.lost_retries = 0  # a lost task fails its trial at once (no re-run)
    lost = channel.client()
    lost.send_bytes(b'["ready"]')
    tid = lost.recv()[1]
    watch = channel.trial(tid)["misc"] = StateWatch(channel.trial(tid))
    lost.close()  # the task dies mid-trial
    deadline = time.monotonic() + 10
    while channel.trial(tid)["state"] == base.JOB_STATE_RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watch.state_at_error == [base.JOB_STATE_RUNNING]
    assert channel.trial(tid)["state"] == base.JOB_STATE_ERROR

    running = channel.client()
    running.send_bytes(b'["ready"]')
    tid = running.recv()[1]
    watch = channel.trial(tid)["misc"] = StateWatch(channel.trial(tid))
    channel.dispatcher.book.cancel_open("killed", stamp=True)
    assert watch.state_at_error == [base.JOB_STATE_RUNNING]
    assert channel.trial(tid)["state"] == base.JOB_STATE_CANCEL
    running.close()


# -- the trial channel under a flood: one deadline per handshake, a cap on connections proving their key --


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the other end closed ``sock`` within ``within_s`` seconds (it sent nothing before)."""
    sock.settimeout(within_s)
    try:
        while True:
            if not sock.recv(4096):  # the driver's challenge comes first, then the end
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def closed_now(sock: socket.socket) -> bool:
    """True when the other end has closed ``sock`` by now (what it sent before is read and dropped)."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.integration
def test_a_slow_drip_handshake_is_cut_at_one_deadline_from_accept(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """A byte every 0.3 s never waits long for one read, but the whole answer does not fit in 1 s."""
    channel.dispatcher.handshake_timeout_s = 1.0
    drip = socket.create_connection(channel.address)
    started = time.monotonic()
    cut_after: float | None = None
    with caplog.at_level(logging.WARNING), drip:
        drip.settimeout(2)
        assert b"#CHALLENGE#" in drip.recv(4096)
        answer = (16).to_bytes(4, "big") + b"x" * 16  # a digest's frame, one byte at a time
        for byte in answer:
            try:
                drip.sendall(bytes([byte]))
                time.sleep(0.3)
                drip.settimeout(0.01)
                if drip.recv(4096) == b"":
                    cut_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                cut_after = time.monotonic() - started
                break
    assert cut_after is not None and 0.9 <= cut_after <= 2.0, cut_after  # not 20 bytes x 0.3 s = 6 s
    deadline = time.monotonic() + 5
    while "no key within" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "refused a connection to the trial channel from 127.0.0.1:" in caplog.text
    assert "no key within 1 s of connecting" in caplog.text


@pytest.mark.integration
def test_silent_connections_beyond_the_cap_are_closed_at_once_and_counted(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = channel.dispatcher
    dispatcher.handshake_timeout_s = 4.0
    cap = dispatcher.max_pending
    assert cap == 16  # parallelism 2: max(2 * 2, 16)
    before = open_fds()
    with caplog.at_level(logging.WARNING):
        silent = [socket.create_connection(channel.address) for _ in range(60)]
        try:
            time.sleep(0.5)
            grown = open_fds() - before
            closed = [closed_now(s) for s in silent]
            assert closed.count(True) == 60 - cap, closed  # the first 16 wait for their deadline
            assert closed[:cap] == [False] * cap
            # the test's own 60 sockets, and one descriptor per connection the driver holds: not 2 x 60
            assert grown <= 60 + cap + 4, grown
            first = [r.getMessage() for r in caplog.records if "closed a connection from" in r.getMessage()]
            assert len(first) == 1, first
            assert "16 connections are already proving their key, the most allowed" in first[0]
            time.sleep(4)  # the held ones reach their deadline and are cut
            assert all(closed_by_peer(s, 1) for s in silent[:cap])
            conn = channel.client()  # a task with the key gets in again, and the flood is counted
            assert conn is not None
            conn.send_bytes(b'["ready"]')
            assert conn.recv()[0] == "trial"
            conn.close()
        finally:
            for s in silent:
                s.close()
    counted = [r for r in caplog.records if "connection(s) at once, over the cap" in r.getMessage()]
    assert [r.getMessage() for r in counted] == [
        "trial channel: closed 44 connection(s) at once, over the cap of 16 connections not yet "
        "authenticated (44 this run)"
    ]
    assert all(r.levelno == logging.WARNING for r in counted)
    assert sum("no key within 4 s" in r.getMessage() for r in caplog.records) == cap


FLOODED_DRIVER = """
import json, logging, os, resource, sys, threading, time
from pyspark.sql import SparkSession
from airflow_provider_sparktune.tuning.dispatch import resident
from airflow_provider_sparktune.tuning.session import run_tuning

port_file, flooded_file, out = sys.argv[1:4]
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
spark = (
    SparkSession.builder.master("local[2]").appName("sparktune-flood")
    .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.enabled", "false").getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
resident.HANDSHAKE_TIMEOUT_S = 3.0
probe = {}

def open_files_once_flooded():
    while not os.path.exists(flooded_file):
        time.sleep(0.05)
    time.sleep(0.5)
    try:
        held = [open(os.devnull) for _ in range(16)]
        probe["fds"] = len(os.listdir("/proc/self/fd"))
        for f in held:
            f.close()
        probe["open"] = "ok"
    except OSError as err:
        probe["open"] = repr(err)

real_listen = resident.listen

def listen_and_tell(*args, **kwargs):
    listener = real_listen(*args, **kwargs)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.address[1]))
    os.rename(port_file + ".tmp", port_file)
    return listener

resident.listen = listen_and_tell
threading.Thread(target=open_files_once_flooded, daemon=True).start()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
result = run_tuning(
    {"x": {"hp": "uniform", "low": 0, "high": 1}}, lambda p: p["x"], spark=spark,
    max_evals=6, parallelism=2, seed=0, timeout=240,
)
with open(out, "w") as done:
    json.dump({"total": result.trials_total, "ok": result.trials_ok, "probe": probe,
               "errors": [r.error for r in result.records if r.error]}, done)
spark.stop()
"""


@pytest.mark.integration
def test_sixty_silent_connections_leave_a_64_descriptor_driver_its_files_and_its_trials(
    tmp_path: Path,
) -> None:
    """The driver of a real local Spark run, limited to 64 descriptors, flooded as its tasks start."""
    port_file, flooded, out, log = (tmp_path / n for n in ("port", "flooded", "out.json", "driver.log"))
    cmd = [sys.executable, "-c", FLOODED_DRIVER, str(port_file), str(flooded), str(out)]
    silent: list[socket.socket] = []
    with process_group(cmd, {"PYSPARK_PYTHON": sys.executable}, log) as driver:
        try:
            deadline = time.monotonic() + 180
            while not port_file.exists():
                assert driver.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the driver never listened"
                time.sleep(0.05)
            address = ("127.0.0.1", int(port_file.read_text()))
            silent = [socket.create_connection(address, timeout=10) for _ in range(60)]
            flooded.touch()
            driver.wait(300)
        finally:
            for s in silent:
                s.close()
    text = log.read_text()
    assert driver.returncode == 0, text[-3000:]
    result = json.loads(out.read_text())
    assert result["probe"].get("open") == "ok", (result, text[-3000:])  # 16 files at once, under the flood
    assert result["probe"]["fds"] <= 64
    assert (result["total"], result["ok"]) == (6, 6), result["errors"]
    assert "16 connections are already proving their key, the most allowed" in text
    assert "over the cap of 16 connections not yet authenticated" in text, text[-3000:]
