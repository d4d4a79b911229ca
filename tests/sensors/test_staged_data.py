"""StagedDataSensor through real dag.test() runs: poke, reschedule, deferrable, timeouts, soft_fail."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.sensors.staged_data import StagedDataSensor
from tests.operators.test_hyperopt_spark import xcom_values

TEST_DAGS = Path(__file__).resolve().parents[1] / "dags"


def write_dataset(root: Path, marker: bool = True, rows: int = 200) -> int:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x": np.arange(float(rows)), "label": np.arange(rows) % 2}).to_parquet(
        root / "part-0.parquet"
    )
    if marker:
        (root / "_SUCCESS").touch()
    return (root / "part-0.parquet").stat().st_size


def write_later(root: Path, delay: float, marker: bool = True) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), write_dataset(root, marker)), daemon=True)
    thread.start()
    return thread


def run(dag_id: str, **conf: Any) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(TEST_DAGS / "staged_data_sensors.py")).get_dag(dag_id)
    return dag.test(run_conf=conf)


def state_of(dag_run: Any) -> str:
    return str(dag_run.get_task_instance("wait_for_data").state)


# --------------------------------------------------------------------------------------------------
# without a database
# --------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_template_fields_and_no_io_in_the_constructor(tmp_path: Path) -> None:
    """Values that would fail (unknown protocol, bad size, missing data) only fail when the sensor runs."""
    assert {"uri", "data_format", "success_marker", "min_size_bytes", "broadcast_threshold_bytes"} <= set(
        StagedDataSensor.template_fields
    )
    bad_protocol = StagedDataSensor(task_id="s", uri="nosuchfs://bucket/{{ ds }}/", data_conn_id=None)
    bad_size = StagedDataSensor(
        task_id="t", uri=str(tmp_path / "missing"), min_size_bytes="lots", data_conn_id=None
    )
    with pytest.raises(StagingError, match="unknown protocol 'nosuchfs'"):
        bad_protocol.poke({})  # type: ignore[arg-type]
    with pytest.raises(StagingError, match="min_size_bytes"):
        bad_size.poke({})  # type: ignore[arg-type]


@pytest.mark.unit
def test_poke_is_false_until_two_pokes_see_the_same_size(tmp_path: Path) -> None:
    sensor = StagedDataSensor(
        task_id="s", uri=str(tmp_path / "ds"), success_marker="_SUCCESS", data_conn_id=None
    )
    context: Any = {}
    assert not sensor.poke(context)
    size = write_dataset(tmp_path / "ds")
    assert not sensor.poke(context)  # first sight
    done = sensor.poke(context)
    assert done and done.xcom_value["size_bytes"] == size and done.xcom_value["mode"] == "broadcast"


@pytest.mark.unit
def test_reschedule_without_a_state_store_looks_twice_in_one_poke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_provider_sparktune.sensors.staged_data as module

    monkeypatch.setattr(module, "STABILITY_WAIT_S", 0.1)
    write_dataset(tmp_path / "ds")
    sensor = StagedDataSensor(task_id="s", uri=str(tmp_path / "ds"), mode="reschedule", data_conn_id=None)
    done = sensor.poke({})  # type: ignore[arg-type]
    assert done and done.xcom_value["uri"] == str(tmp_path / "ds")


@pytest.mark.unit
def test_bad_arguments_fail_the_poke_naming_the_field(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds")
    sensor = StagedDataSensor(
        task_id="s", uri=str(tmp_path / "ds"), min_size_bytes="a lot", data_conn_id=None
    )
    with pytest.raises(StagingError, match="min_size_bytes: 'a lot' is not a number of bytes"):
        sensor.poke({})  # type: ignore[arg-type]


@pytest.mark.unit
def test_a_uri_outside_the_allowed_prefixes_fails_before_deferring(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds")
    sensor = StagedDataSensor(
        task_id="s",
        uri=str(tmp_path / "ds"),
        allowed_data_prefixes=[str(tmp_path / "elsewhere")],
        deferrable=True,
        data_conn_id=None,
    )
    with pytest.raises(
        StagingError, match=r"^uri: '.*/ds' is not under the prefixes allowed_prefixes allows"
    ):
        sensor.execute({})  # type: ignore[arg-type]
    marker = StagedDataSensor(
        task_id="m", uri=str(tmp_path / "ds"), success_marker="../../_SUCCESS", data_conn_id=None
    )
    with pytest.raises(StagingError, match=r"^success_marker: '\.\./\.\./_SUCCESS' is outside the dataset"):
        marker.poke({})  # type: ignore[arg-type]


@pytest.mark.unit
def test_a_uri_its_connection_may_not_send_credentials_to_fails_before_deferring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection's login goes to its own host only: another host is refused before the task
    defers, not in the triggerer's first poke."""
    import json

    conn = {"conn_type": "fsspec", "host": "files.example.com", "login": "ann", "password": "s3cr3t-pw"}
    monkeypatch.setenv("AIRFLOW_CONN_FILES", json.dumps(conn))
    sensor = StagedDataSensor(
        task_id="s", uri="ftp://elsewhere.example.org/ds/", data_conn_id="files", deferrable=True
    )
    with pytest.raises(
        StagingError, match=r"^uri 'ftp://elsewhere.example.org/ds/': host 'elsewhere.example.org' is not"
    ):
        sensor.execute({})  # type: ignore[arg-type]


@pytest.mark.unit
def test_the_plan_in_xcom_carries_no_password_of_the_uri() -> None:
    from airflow_provider_sparktune.data.storage import open_fs

    fs, path = open_fs("memory://reader:pw-5b90@store/ds/part-0.parquet")
    with fs.open(path, "wb") as f:
        f.write(pd.DataFrame({"x": [1.0, 2.0]}).to_parquet())
    sensor = StagedDataSensor(
        task_id="s", uri="memory://reader:pw-5b90@store/ds/", require_stable=False, data_conn_id=None
    )
    done = sensor.poke({})  # type: ignore[arg-type]
    assert done and done.xcom_value["uri"] == "memory://store/ds/"
    assert "pw-5b90" not in repr(done.xcom_value)


@pytest.mark.unit
def test_a_refusal_names_the_uri_without_its_login() -> None:
    """Refusals raised by the hook (a marker outside the dataset, a URI outside the prefixes) before any
    read: the URI in them has no login, however the message was built."""
    uri = "ftp://bob:s3cr'et@r3fused@files.example.com/ds/"
    for arguments, field in (
        ({"success_marker": "../_SUCCESS"}, "success_marker"),
        ({"allowed_data_prefixes": ["ftp://files.example.com/other/"]}, "uri"),
    ):
        sensor = StagedDataSensor(task_id="s", uri=uri, data_conn_id=None, **arguments)  # type: ignore[arg-type]
        with pytest.raises(StagingError) as caught:
            sensor.poke({})  # type: ignore[arg-type]
        message = str(caught.value)
        assert message.startswith(f"{field}: ") and "ftp://files.example.com/ds" in message, message
        for piece in ("s3cr", "r3fused", "bob:"):
            assert piece not in message, message


# --------------------------------------------------------------------------------------------------
# dag.test() runs
# --------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_dataset_that_appears_after_a_few_pokes(airflow_db: Any, tmp_path: Path) -> None:
    root = tmp_path / "features"
    writer = write_later(root, delay=2.0)
    started = time.monotonic()
    dag_run = run("staged_data_poke", uri=str(root), marker="_SUCCESS")
    writer.join()
    assert dag_run.state == "success"
    assert time.monotonic() - started >= 2.0
    assert dag_run.get_task_instance("wait_for_data").trigger_id is None  # poke mode held its slot
    plan = xcom_values(dag_run.run_id, "wait_for_data")["return_value"]
    assert plan["uri"] == str(root) and plan["format"] == "parquet" and plan["mode"] == "broadcast"
    assert plan["size_bytes"] == (root / "part-0.parquet").stat().st_size


@pytest.mark.integration
def test_data_without_its_success_marker_is_not_ready(airflow_db: Any, tmp_path: Path) -> None:
    root = tmp_path / "features"
    write_dataset(root, marker=False)
    dag_run = run("staged_data_timeout", uri=str(root), marker="_SUCCESS")
    assert dag_run.state == "failed" and state_of(dag_run) == "failed"
    (root / "_SUCCESS").touch()
    dag_run = run("staged_data_poke", uri=str(root), marker="_SUCCESS")
    assert dag_run.state == "success"


@pytest.mark.integration
def test_timeout_fails_and_soft_fail_skips(airflow_db: Any, tmp_path: Path) -> None:
    missing = str(tmp_path / "never")
    failed = run("staged_data_timeout", uri=missing)
    assert failed.state == "failed" and state_of(failed) == "failed"
    skipped = run("staged_data_soft_fail", uri=missing)
    assert skipped.state == "success" and state_of(skipped) == "skipped"
    assert "return_value" not in xcom_values(skipped.run_id, "wait_for_data")


@pytest.mark.integration
def test_reschedule_mode_keeps_the_last_size_between_pokes(airflow_db: Any, tmp_path: Path) -> None:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    root = tmp_path / "features"
    size = write_dataset(root)
    dag_run = run("staged_data_reschedule", uri=str(root), marker="_SUCCESS")
    assert dag_run.state == "success"
    ti = dag_run.get_task_instance("wait_for_data")
    with create_session() as session:
        reschedules = session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).count()
    assert reschedules >= 1  # first sight freed the slot; the stored size let the next poke finish
    assert xcom_values(dag_run.run_id, "wait_for_data")["return_value"]["size_bytes"] == size


def reschedules_of(dag_run: Any) -> int:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    ti = dag_run.get_task_instance("wait_for_data")
    with create_session() as session:
        return int(session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).count())


@pytest.mark.integration
def test_reschedule_mode_times_out_across_reschedules(
    airflow_db: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The timeout counts from the first poke, not from each reschedule: the wait ends, failed or skipped."""
    from tests.operators.test_hyperopt_spark import task_log

    missing = str(tmp_path / "never")
    failed = run("staged_data_reschedule_timeout", uri=missing)
    assert failed.state == "failed" and state_of(failed) == "failed"
    assert reschedules_of(failed) >= 1  # it freed the slot between pokes before giving up
    assert "Sensor has timed out" in task_log(failed.run_id, capfd.readouterr().out)
    skipped = run("staged_data_reschedule_soft_fail", uri=missing)
    assert skipped.state == "success" and state_of(skipped) == "skipped"
    assert reschedules_of(skipped) >= 1
    assert "return_value" not in xcom_values(skipped.run_id, "wait_for_data")


@pytest.mark.integration
def test_deferrable_waits_in_the_trigger(airflow_db: Any, tmp_path: Path) -> None:
    root = tmp_path / "features"
    writer = write_later(root, delay=1.5)
    dag_run = run("staged_data_deferrable", uri=str(root), marker="_SUCCESS")
    writer.join()
    assert dag_run.state == "success"
    assert dag_run.get_task_instance("wait_for_data").trigger_id is not None  # it did defer
    plan = xcom_values(dag_run.run_id, "wait_for_data")["return_value"]
    assert plan["uri"] == str(root) and plan["mode"] == "broadcast"


@pytest.mark.integration
def test_deferrable_timeout_with_soft_fail_skips(airflow_db: Any, tmp_path: Path) -> None:
    dag_run = run("staged_data_deferrable_soft_fail", uri=str(tmp_path / "never"))
    assert state_of(dag_run) == "skipped"


@pytest.mark.integration
def test_every_poke_logs_the_uri_without_its_login(
    airflow_db: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A URI from run conf with a login (a real FTP server checks it): the task log of every poke, the
    timeout, and the deferred wait name the URI without it."""
    from tests.operators.test_hyperopt_spark import task_log
    from tests.servers import ftp_server

    user, password = "carol", "s@fe'k3y:91c3"  # no other test registers these with Airflow's masker
    (tmp_path / "ftp").mkdir()
    with ftp_server(tmp_path / "ftp", user, password) as server:
        uri = server.uri("never/").replace("ftp://", f"ftp://{user}:{password}@", 1)
        poked = run("staged_data_timeout", uri=uri)
        deferred = run("staged_data_deferrable_soft_fail", uri=uri)
        captured = capfd.readouterr()
    assert server.logins >= 2 and server.refused == 0  # each wait read the server with the URI's login
    assert poked.state == "failed" and state_of(deferred) == "skipped"
    log = task_log(poked.run_id, captured.out + captured.err) + task_log(deferred.run_id)
    assert log.count(f"not ready: {server.uri('never/')} does not exist yet") >= 2, log[-3000:]
    rendered = repr([rendered_fields(run) for run in (poked, deferred)])  # what the UI shows
    assert "ftp://***@127.0.0.1" in rendered, rendered
    for secret in (password, "s%40fe", "k3y", f"{user}:"):
        assert secret not in log, log[-3000:]
        assert secret not in rendered, rendered


def rendered_fields(dag_run: Any) -> Any:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = dag_run.get_task_instance("wait_for_data", session=session)
        return RenderedTaskInstanceFields.get_templated_fields(ti, session=session)
