from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.hooks.spark_gateway import gateway_launch_supported, jvm_line_levels
from airflow_provider_sparktune.hooks.spark_session import (
    SparkSessionHook,
    conf_from_extra,
    resolve_master,
)
from airflow_provider_sparktune.redaction import redact_uri
from airflow_provider_sparktune.tuning.dispatch.daemon import DAEMON_MODULE, DAEMON_MODULE_CONF
from airflow_provider_sparktune.tuning.dispatch.launch import CALLBACK_HOST_CONF, CALLBACK_TIMEOUT_CONF
from tests.servers import free_port, spark_connect_server

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("host", "port", "master"),
    [
        ("spark://10.0.0.5", 7077, "spark://10.0.0.5:7077"),
        ("spark://10.0.0.5:7078", 7077, "spark://10.0.0.5:7078"),
        ("10.0.0.5", 7077, "spark://10.0.0.5:7077"),
        ("local[4]", None, "local[4]"),
        ("yarn", None, "yarn"),
        ("k8s://https://10.0.0.1:6443", None, "k8s://https://10.0.0.1:6443"),
        ("", None, "local[*]"),
        ("sc://10.0.0.5", 15002, "sc://10.0.0.5:15002"),
        ("sc://10.0.0.5:15003", 15002, "sc://10.0.0.5:15003"),
        ("sc://10.0.0.5/;use_ssl=true", 15002, "sc://10.0.0.5:15002/;use_ssl=true"),
    ],
)
def test_master_from_host_and_port(host: str, port: int | None, master: str) -> None:
    assert resolve_master(host, port) == master


@pytest.mark.unit
def test_a_spark_connect_connection_gives_the_providers_url_with_its_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {
        "conn_type": "spark_connect",
        "host": "connect.example",
        "port": 15002,
        "login": "etl",
        "password": "s3cret-token",
        "extra": {
            "use_ssl": True,
            "callback_host": "10.1.2.3",
            "spark_conf": {"spark.sql.shuffle.partitions": 4},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_TUNE_CONNECT", json.dumps(conn))
    hook = SparkSessionHook("tune_connect", connect_timeout=7)
    url, conf, timeout = hook.resolve()
    assert url == "sc://connect.example:15002/;user_id=etl;token=s3cret-token;use_ssl=True"
    assert hook.is_connect
    assert conf[CALLBACK_HOST_CONF] == "10.1.2.3"
    assert conf[CALLBACK_TIMEOUT_CONF] == "7"  # the wait for tasks to connect back: the same bound
    assert conf["spark.sql.shuffle.partitions"] == "4"
    assert "spark.ui.showConsoleProgress" not in conf  # static: a Connect server would refuse it
    assert DAEMON_MODULE_CONF not in conf  # the server's own: static as well
    assert timeout == 7
    assert "s3cret-token" not in redact_uri(url) and redact_uri(url).endswith("token=***;use_ssl=True")


@pytest.mark.unit
def test_a_spark_connection_with_an_sc_host_is_spark_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SC_HOST", json.dumps({"conn_type": "spark", "host": "sc://h", "port": 15002})
    )
    hook = SparkSessionHook("sc_host")
    assert hook.resolve()[0] == "sc://h:15002" and hook.is_connect
    assert CALLBACK_HOST_CONF not in hook.resolve()[1]  # default: the address the server sees


@pytest.mark.integration
def test_a_connect_server_that_is_down_fails_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    conn = {"conn_type": "spark_connect", "host": "127.0.0.1", "port": port, "password": "tok-do-not-log"}
    monkeypatch.setenv("AIRFLOW_CONN_CONNECT_DOWN", json.dumps(conn))
    hook = SparkSessionHook("connect_down", connect_timeout=5)
    started = time.monotonic()
    with pytest.raises(SparkConnectionError) as caught:
        hook.get_session()
    assert time.monotonic() - started < 5 + 10
    message = str(caught.value)
    assert message.startswith(
        f"spark_conn_id 'connect_down': the Spark Connect server at sc://127.0.0.1:{port}"
    )
    assert "did not answer within 5 s" in message and "tok-do-not-log" not in message


GIVE_UP_ON_A_DEAD_SERVER = """
from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook
try:
    SparkSessionHook("connect_down", connect_timeout=3).get_session()
except SparkConnectionError as err:
    print("REFUSED", err)
"""


@pytest.mark.integration
def test_a_task_that_gave_up_on_a_dead_connect_server_ends() -> None:
    """No Spark Connect client is left behind to retry for minutes, also in its exit handler."""
    conn = {"conn_type": "spark_connect", "host": "127.0.0.1", "port": free_port()}
    env = {**os.environ, "AIRFLOW_CONN_CONNECT_DOWN": json.dumps(conn)}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", GIVE_UP_ON_A_DEAD_SERVER],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the process had not ended {err.timeout:.0f} s after giving up at 3 s: {err.stdout!r}")
    assert "REFUSED spark_conn_id 'connect_down': the Spark Connect server" in done.stdout, done.stderr[
        -2000:
    ]
    assert done.returncode == 0
    ended_after = time.monotonic() - started
    assert ended_after < 150, f"the process took {ended_after:.0f} s to end after giving up at 3 s"


REFUSED_THEN_SERVER_GONE = """
import sys
from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook
try:
    SparkSessionHook("no_token", connect_timeout=60).get_session()
except SparkConnectionError as err:
    print("READY refused:", err, flush=True)
sys.stdin.readline()  # the test stops the server, then lets this process end
"""

SERVER_GONE_DURING_THE_RUN = """
import sys
from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook
hook = SparkSessionHook("with_token", connect_timeout=60)
print("READY counted", hook.get_session().range(5).count(), flush=True)
sys.stdin.readline()  # the test stops the server: the task ends and stops its session
hook.stop()
"""


def child_ready(script: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """A child process running ``script``, and its first line starting with READY."""
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    lines = [child.stdout.readline()]  # the hook's log lines come first
    while lines[-1] and not lines[-1].startswith("READY"):
        lines.append(child.stdout.readline())
    return child, "".join(lines)[-2000:]


@pytest.mark.integration
def test_tasks_end_once_their_connect_server_is_gone(tmp_path: Path) -> None:
    """No Spark Connect client is left to retry for minutes: not one the server refused, nor the
    session of a task whose server died during the run."""
    children: list[subprocess.Popen[str]] = []
    try:
        with spark_connect_server(tmp_path, token="connect-token-2") as server:
            env = {
                "AIRFLOW_CONN_NO_TOKEN": json.dumps({**json.loads(server.connection()), "password": None}),
                "AIRFLOW_CONN_WITH_TOKEN": server.connection(),
            }
            refused, output = child_ready(REFUSED_THEN_SERVER_GONE, env)
            children.append(refused)
            assert "READY refused: spark_conn_id 'no_token'" in output, output
            working, output = child_ready(SERVER_GONE_DURING_THE_RUN, env)
            children.append(working)
            assert "READY counted 5" in output, output
        let_go = time.monotonic()  # the server is gone now
        for child in children:
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()
        for child, name in zip(children, ("refused", "server gone during the run"), strict=True):
            try:
                child.wait(timeout=max(1.0, 120 - (time.monotonic() - let_go)))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name}: the process had not ended 120 s after the server was gone")
            ended_after = time.monotonic() - let_go
            # a client left open retries after 50 ms, 0.2, 0.8, 3.2, 12.8, 51 s... in its exit handler
            assert ended_after < 30, f"{name}: the process took {ended_after:.0f} s to end"
            assert child.returncode == 0, name
    finally:
        for child in children:
            child.kill()
            child.wait()


@pytest.mark.integration
def test_a_connect_session_sends_the_token_and_is_stopped_with_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with spark_connect_server(tmp_path, token="connect-token-1") as server:
        monkeypatch.setenv("AIRFLOW_CONN_WITH_TOKEN", server.connection())
        hook = SparkSessionHook("with_token", connect_timeout=120)
        session = hook.get_session()
        assert session.range(5).count() == 5  # the server refuses a client without the token
        hook.stop()
        with pytest.raises(Exception):  # noqa: B017  (pyspark raises its own error types for a closed session)
            session.range(1).count()
        monkeypatch.setenv(
            "AIRFLOW_CONN_NO_TOKEN", json.dumps({**json.loads(server.connection()), "password": None})
        )
        with pytest.raises(SparkConnectionError, match="cannot start Spark on sc://localhost|did not answer"):
            SparkSessionHook("no_token", connect_timeout=30).get_session()


@pytest.mark.unit
def test_conf_from_extra_merges_both_forms() -> None:
    extra = {"spark_conf": {"spark.executor.memory": "2g"}, "spark.task.cpus": 2, "queue": "root"}
    assert conf_from_extra(extra) == {"spark.executor.memory": "2g", "spark.task.cpus": "2"}


@pytest.mark.unit
def test_connection_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "spark",
        "host": "spark://127.0.0.1",
        "port": 7077,
        "extra": {"spark.task.cpus": "2"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_TUNE", json.dumps(conn))
    hook = SparkSessionHook("spark_tune", spark_conf={"spark.executor.cores": 1}, connect_timeout=5)
    master, conf, timeout = hook.resolve()
    assert master == "spark://127.0.0.1:7077"
    assert conf["spark.task.cpus"] == "2"
    assert conf["spark.executor.cores"] == "1"
    assert timeout == 5


@pytest.mark.unit
def test_the_absent_default_connection_means_local_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    master, conf, _ = SparkSessionHook().resolve()
    assert master == "local[*]"
    assert conf["spark.ui.showConsoleProgress"] == "false"
    assert conf[DAEMON_MODULE_CONF] == DAEMON_MODULE
    printed = capsys.readouterr()  # the hook's log is Airflow's structured logger
    line = next(x for x in (printed.out + printed.err).splitlines() if "'spark_default' is not set" in x)
    assert "warning" in line.lower(), line
    assert (
        "Spark connection 'spark_default' is not set: running Spark local[*] on this Airflow worker. To run "
        "on a cluster (host spark://host:7077, yarn, k8s://... or sc://host:15002): create it (Admin > "
        "Connections, or AIRFLOW_CONN_SPARK_DEFAULT)"
    ) in line


@pytest.mark.unit
def test_a_missing_spark_conn_id_is_an_error_naming_it() -> None:
    hook = SparkSessionHook("spark_defualt")
    with pytest.raises(SparkConnectionError) as caught:
        hook.resolve()  # what the operator calls before MLflow or Spark is touched
    assert str(caught.value) == (
        "spark_conn_id 'spark_defualt': no such Airflow connection; create it (Admin > Connections, or "
        "AIRFLOW_CONN_SPARK_DEFUALT) or leave spark_conn_id at its default 'spark_default' to run on "
        "Spark local[*] on this worker"
    )
    with pytest.raises(SparkConnectionError, match="^spark_conn_id 'spark_defualt': no such"):
        hook.get_session()
    assert hook._session is None


@pytest.mark.unit
def test_wrong_connection_type_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOT_SPARK", json.dumps({"conn_type": "postgres", "host": "db"}))
    with pytest.raises(
        SparkConnectionError, match="spark_conn_id: connection 'not_spark' has type 'postgres'"
    ):
        SparkSessionHook("not_spark").resolve()


@pytest.mark.integration
def test_existing_session_is_reused_and_left_running(spark: Any) -> None:
    hook = SparkSessionHook()
    assert hook.get_session().sparkContext is spark.sparkContext
    hook.stop()
    assert spark.sparkContext.range(3).count() == 3  # still alive


HOOK_BAD_INPUT: list[tuple[str, dict[str, Any], str | None, str]] = [
    # (case id, hook arguments, connection JSON for conn id "bad", error starts with)
    (
        "spark_conn_id-unknown-type",
        {},
        json.dumps({"conn_type": "http", "host": "x"}),
        "spark_conn_id: connection 'bad'",
    ),
    (
        "spark_conn_id-spark-connect-no-host",
        {},
        json.dumps({"conn_type": "spark_connect"}),
        "spark_conn_id: connection 'bad' of type 'spark_connect' has no host",
    ),
    (
        "spark_conn_id-extra-conf",
        {},
        json.dumps({"conn_type": "spark", "extra": {"spark_conf": "x"}}),
        "spark_conn_id: the extra",
    ),
    (
        "spark_conn_id-extra-timeout",
        {},
        json.dumps({"conn_type": "spark", "extra": {"connect_timeout": -1}}),
        "spark_conn_id: extra connect_timeout",
    ),
    ("spark_conf-wrong-type", {"spark_conf": "spark.x=1"}, None, "spark_conf: str given"),
    ("connect_timeout-out-of-range", {"connect_timeout": 0}, None, "spark_connect_timeout: 0 must be"),
    (
        "connect_timeout-wrong-type",
        {"connect_timeout": "soon"},
        None,
        "spark_connect_timeout: 'soon' must be",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("arguments", "connection", "expected"),
    [case[1:] for case in HOOK_BAD_INPUT],
    ids=[case[0] for case in HOOK_BAD_INPUT],
)
def test_bad_input(
    monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any], connection: str | None, expected: str
) -> None:
    if connection is not None:
        monkeypatch.setenv("AIRFLOW_CONN_BAD", connection)
    hook = SparkSessionHook("bad" if connection is not None else "spark_default", **arguments)
    with pytest.raises(SparkConnectionError) as caught:
        hook.resolve()  # what the operator calls before MLflow or Spark is touched
    assert str(caught.value).startswith(expected), str(caught.value)


@pytest.mark.unit
def test_driver_jvm_lines_keep_sparks_level() -> None:
    lines = [
        "WARNING: Using incubator modules: jdk.incubator.vector",
        'Setting default log level to "WARN".',
        "26/12/01 14:57:59 WARN NativeCodeLoader: Unable to load native-hadoop library",
        "26/12/01 14:58:01 ERROR Executor: Exception in task 0.0",
        "java.lang.RuntimeException: boom",
        "\tat org.apache.spark.Executor.run(Executor.scala:1)",
        "Caused by: java.io.IOException: closed",
        "26/12/01 14:58:02 INFO SparkContext: Successfully stopped SparkContext",
    ]
    assert [level for level, _ in jvm_line_levels(lines)] == [
        logging.INFO,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
        logging.ERROR,
        logging.ERROR,
        logging.ERROR,
        logging.INFO,
    ]


# A task process: Python logging to stdout (as the Airflow task runner sends it to the task log),
# stderr untouched (the task supervisor records every stderr line as an error).
NEW_SESSION = textwrap.dedent(
    """
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
    from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook
    hook = SparkSessionHook("spark_probe", spark_conf={"spark.ui.enabled": "false", "spark.task.maxFailures": "3"})
    session = hook.get_session()
    conf = session.sparkContext.getConf()
    executor_python = session.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect()
    executor_env = session.sparkContext.parallelize([0], 1).map(lambda _: dict(__import__("os").environ)).collect()
    print("RESULT " + json.dumps({
        "master": session.sparkContext.master,
        "app": session.sparkContext.appName,
        "conf": {key: conf.get(key) for key in ("spark.executor.memory", "spark.sql.shuffle.partitions",
                                                 "spark.task.maxFailures", "spark.ui.enabled")},
        "executor_python": executor_python[0],
        "executor_mlflow_env": sorted(k for k in executor_env[0] if k.startswith("MLFLOW_TRACKING_")),
    }))
    hook.stop()
    """
)


@pytest.mark.integration
def test_new_session_takes_the_connection_and_logs_spark_output(tmp_path: Path) -> None:
    """A fresh process, as a task is: the connection's conf reaches the SparkContext, executors run this
    Python although PYSPARK_PYTHON is unset, and Spark's own output goes to logging, not stderr.
    MLflow's credentials in the task's environment do not reach the executors (objectives)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "SPARK_LOCAL_IP")}
    env.update(
        MLFLOW_TRACKING_TOKEN="sparktune-token", MLFLOW_TRACKING_PASSWORD="pw", MLFLOW_TRACKING_URI="x"
    )
    env["AIRFLOW_CONN_SPARK_PROBE"] = json.dumps(
        {
            "conn_type": "spark",
            "host": "local[1]",
            "extra": {"spark_conf": {"spark.executor.memory": "1234m"}, "spark.sql.shuffle.partitions": "7"},
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", NEW_SESSION], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["master"] == "local[1]"
    assert result["conf"] == {
        "spark.executor.memory": "1234m",
        "spark.sql.shuffle.partitions": "7",
        "spark.task.maxFailures": "3",
        "spark.ui.enabled": "false",
    }
    assert result["executor_python"] == sys.executable
    assert result["executor_mlflow_env"] == ["MLFLOW_TRACKING_URI"]  # the address, not the credentials
    jvm_lines = [line for line in done.stdout.splitlines() if "spark_jvm" in line]
    assert any("Setting default log level" in line for line in jvm_lines), done.stdout[-3000:]
    assert done.stderr.strip() == ""


@pytest.mark.unit
def test_the_driver_jvm_is_started_here_only_where_pyspark_lets_it() -> None:
    from pyspark import SparkContext
    from pyspark.java_gateway import launch_gateway

    assert gateway_launch_supported(SparkContext, launch_gateway)  # every supported pyspark

    class ContextWithoutGatewaySlots:
        pass

    def launch_without_popen_kwargs(conf: Any = None) -> None:
        pass

    assert not gateway_launch_supported(ContextWithoutGatewaySlots, launch_gateway)
    assert not gateway_launch_supported(SparkContext, launch_without_popen_kwargs)


@pytest.mark.unit
def test_a_pyspark_that_cannot_count_executors_starts_the_run_without_waiting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from types import SimpleNamespace

    hook = SparkSessionHook("spark_default")
    session = SimpleNamespace(sparkContext=SimpleNamespace())  # no JVM SparkContext behind it
    hook._wait_for_executors(session, "spark://h:7077", time.monotonic() + 30, 30.0)
    printed = capsys.readouterr()  # the hook's log is Airflow's structured logger
    assert (
        "This pyspark does not count executors: not waiting for one to register" in printed.out + printed.err
    )
