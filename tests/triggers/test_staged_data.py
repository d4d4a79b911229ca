"""The deferrable sensor's trigger, run on its own event loop: no Airflow database, real files."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_provider_sparktune.triggers.staged_data import StagedDataTrigger

pytestmark = pytest.mark.unit


def first_event(trigger: StagedDataTrigger, timeout: float = 60) -> Any:
    async def run() -> Any:
        return await asyncio.wait_for(anext(trigger.run()), timeout)

    return asyncio.run(run()).payload


def write_later(path: Path, delay: float) -> threading.Thread:
    def write() -> None:
        time.sleep(delay)
        path.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"x": np.arange(100.0)}).to_parquet(path / "part-0.parquet")
        (path / "_SUCCESS").touch()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_serializes_to_an_importable_class_and_its_arguments() -> None:
    trigger = StagedDataTrigger(uri="s3://b/d/", success_marker="_SUCCESS", poke_interval=30, timeout_at=1.5)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["success_marker"] == "_SUCCESS" and kwargs["timeout_at"] == 1.5


def test_fires_once_the_data_appears_and_holds_still(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    writer = write_later(root, delay=0.6)
    started = time.monotonic()
    event = first_event(
        StagedDataTrigger(uri=str(root), success_marker="_SUCCESS", poke_interval=0.2, data_conn_id=None)
    )
    writer.join()
    assert event["status"] == "success"
    assert event["pokes"] >= 4  # several misses, first sight, then the stable poke
    assert time.monotonic() - started >= 0.6
    assert event["plan"]["uri"] == str(root) and event["plan"]["mode"] == "broadcast"
    assert event["plan"]["size_bytes"] == (root / "part-0.parquet").stat().st_size


def test_times_out_with_an_event_the_sensor_turns_into_a_timeout(tmp_path: Path) -> None:
    trigger = StagedDataTrigger(
        uri=str(tmp_path / "never"), poke_interval=0.2, timeout_at=time.time() + 0.5, data_conn_id=None
    )
    event = first_event(trigger)
    assert event["status"] == "timeout"
    assert (
        f"{tmp_path}/never was not ready after" in event["message"]
        and "does not exist yet" in event["message"]
    )


def test_bad_uri_is_an_error_event_naming_it() -> None:
    event = first_event(StagedDataTrigger(uri="nosuchfs://bucket/d/", poke_interval=0.1, data_conn_id=None))
    assert event["status"] == "error"
    assert "data 'nosuchfs://bucket/d/': unknown protocol 'nosuchfs'" in event["message"]


def test_events_log_lines_and_repr_name_the_uri_without_its_login(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The triggerer logs the trigger and every poke, and stores its events: no login of the URI in any."""
    import logging

    from tests.servers import ftp_server, wait_until

    password = "it's-p@ss:0d5e"
    (tmp_path / "ftp").mkdir()
    with ftp_server(tmp_path / "ftp", "ann", password) as server, caplog.at_level(logging.INFO):
        public = server.uri("never/")
        uri = public.replace("ftp://", f"ftp://ann:{password}@", 1)
        trigger = StagedDataTrigger(
            uri=uri, poke_interval=0.2, timeout_at=time.time() + 0.7, data_conn_id=None
        )
        timeout = first_event(trigger)
        wrong = uri.replace(password, password + "-wrong")
        error = first_event(StagedDataTrigger(uri=wrong, poke_interval=0.1, data_conn_id=None))
        shown = repr(trigger)
        wait_until(lambda: server.refused >= 1, 10, "the FTP server to count the refused login")
    assert trigger.serialize()[1]["uri"] == uri  # the triggerer still reads with the login
    assert timeout["status"] == "timeout" and timeout["message"].startswith(f"{public} was not ready after")
    assert error["status"] == "error" and f"data '{public}'" in error["message"]
    assert server.logins >= 2
    assert f"uri={public}," in shown
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text  # structlog writes to the console
    assert "poke 2: not ready: " in logged and f"{public} does not exist yet" in logged, logged[-3000:]
    for text in (timeout["message"], error["message"], shown, logged):
        for secret in (password, "p%40ss", "ann:"):
            assert secret not in text, text


def test_the_stored_success_event_holds_the_plan_without_the_login(tmp_path: Path) -> None:
    """The event is stored in Airflow's database and read back by the sensor: its plan is redacted."""
    from tests.servers import ftp_server

    password = "it's-p@ss:77aa"
    (tmp_path / "ftp" / "ds").mkdir(parents=True)
    pd.DataFrame({"x": np.arange(100.0)}).to_parquet(tmp_path / "ftp" / "ds" / "part-0.parquet")
    with ftp_server(tmp_path / "ftp", "ann", password) as server:
        uri = server.uri("ds/").replace("ftp://", f"ftp://ann:{password}@", 1)
        event = first_event(
            StagedDataTrigger(uri=uri, poke_interval=0.1, require_stable=False, data_conn_id=None)
        )
    assert event["status"] == "success" and event["plan"]["uri"] == server.uri("ds/")
    assert password not in repr(event) and "ann:" not in repr(event)
