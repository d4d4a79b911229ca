from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook, conf_from_extra, resolve_master


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
    ],
)
def test_master_from_host_and_port(host: str, port: int | None, master: str) -> None:
    assert resolve_master(host, port) == master


@pytest.mark.unit
def test_spark_connect_is_refused_with_the_reason() -> None:
    with pytest.raises(SparkConnectionError, match="classic SparkContext"):
        resolve_master("sc://10.0.0.5", 15002)


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
def test_missing_connection_means_local(monkeypatch: pytest.MonkeyPatch) -> None:
    master, conf, _ = SparkSessionHook("no_such_spark_conn").resolve()
    assert master == "local[*]"
    assert conf["spark.ui.showConsoleProgress"] == "false"


@pytest.mark.unit
def test_wrong_connection_type_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOT_SPARK", json.dumps({"conn_type": "postgres", "host": "db"}))
    with pytest.raises(
        SparkConnectionError, match="spark_conn_id: connection 'not_spark' has type 'postgres'"
    ):
        SparkSessionHook("not_spark").resolve()


@pytest.mark.integration
def test_existing_session_is_reused_and_left_running(spark: Any) -> None:
    hook = SparkSessionHook("no_such_spark_conn")
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
        "spark_conn_id-spark-connect",
        {},
        json.dumps({"conn_type": "spark", "host": "sc://h"}),
        "spark_conn_id 'bad': ",
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
    hook = SparkSessionHook("bad" if connection is not None else "no_such_spark", **arguments)
    with pytest.raises(SparkConnectionError) as caught:
        hook.resolve()  # what the operator calls before MLflow or Spark is touched
    assert str(caught.value).startswith(expected), str(caught.value)
