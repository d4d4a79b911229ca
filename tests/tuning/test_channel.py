"""The trial channel's rules: who may listen where, and what a result may carry back to the driver."""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from multiprocessing import AuthenticationError
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.tuning.dispatch.channel import (
    MAX_MESSAGE_BYTES,
    ChannelError,
    OverCap,
    authenticate,
    check_result,
    connect,
    listen,
    max_pending,
    result_message,
)
from airflow_provider_sparktune.tuning.dispatch.launch import CALLBACK_BIND_CONF, CALLBACK_HOST_CONF


@pytest.mark.unit
def test_a_callback_host_of_another_machine_is_refused_not_listened_for_on_every_interface() -> None:
    with pytest.raises(SparkConnectionError) as refused:
        listen("192.0.2.1", 2)  # TEST-NET-1: never an address of this machine
    message = str(refused.value)
    assert CALLBACK_HOST_CONF in message and "'192.0.2.1' is not an address of this machine" in message
    assert f"set {CALLBACK_BIND_CONF}" in message
    everywhere = listen("192.0.2.1", 2, bind="0.0.0.0")  # asked for explicitly: fine
    everywhere.close()


@pytest.mark.unit
def test_a_result_carries_exactly_the_known_keys_as_plain_numbers() -> None:
    result = {
        "loss": 0.5,
        "status": "ok",
        "loss_variance": 0.1,
        "metrics": {"auc": 0.9},
        "sparktune_curve": [(0, 0.7), (1, 0.5)],
    }
    assert check_result(result) == {**result, "sparktune_curve": [[0, 0.7], [1, 0.5]]}
    assert check_result({"status": "fail", "failure": "diverged"}) == {
        "status": "fail",
        "failure": "diverged",
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    ("result", "fragment"),
    [
        pytest.param({"loss": 1.0, "model": object()}, "returned key(s) 'model'", id="extra-key"),
        pytest.param({"status": "ok"}, "loss None: not a finite number", id="no-loss"),
        pytest.param({"loss": math.nan}, "loss nan", id="nan"),
        pytest.param({"loss": "1"}, "loss '1'", id="text-loss"),
        pytest.param({"loss": 1.0, "status": "running"}, "status 'running'", id="status"),
        pytest.param({"loss": 1.0, "metrics": [1.0]}, "metrics of type list", id="metrics-list"),
        pytest.param({"loss": 1.0, "metrics": {"a": "x"}}, "metrics.a 'x'", id="metric-text"),
        pytest.param({"loss": 1.0, "sparktune_curve": [[-1, 1.0]]}, "curve step -1", id="curve-step"),
        pytest.param({"loss": 1.0, "sparktune_pruned_step": True}, "pruned step True", id="pruned-bool"),
        pytest.param([1.0], "a result of type list", id="not-a-dict"),
    ],
)
def test_a_result_that_breaks_the_rules_is_refused_with_the_reason(result: Any, fragment: str) -> None:
    with pytest.raises(ChannelError) as refused:
        check_result(result)
    assert fragment in str(refused.value)


@pytest.mark.unit
def test_an_unpicklable_or_huge_result_becomes_that_trials_error_on_the_executor() -> None:
    fitted = {"weights": threading.Lock()}  # neither JSON nor picklable
    kind, tid, error_type, text, _ = json.loads(result_message(3, {"loss": 0.1, "model": fitted}, 0.5))
    assert (kind, tid, error_type) == ("error", 3, "ObjectiveError")
    assert "returned key(s) 'model'" in text and "save models" in text
    curve = [[step, 0.123456789] for step in range(60_000)]
    kind, _, _, text, _ = json.loads(result_message(4, {"loss": 0.1, "sparktune_curve": curve}, 0.5))
    assert kind == "error" and f"over the {MAX_MESSAGE_BYTES} bytes" in text
    kind, _, result, eval_s = json.loads(result_message(5, {"loss": 0.1, "status": "ok"}, 0.5))
    assert (kind, result, eval_s) == ("ok", {"loss": 0.1, "status": "ok"}, 0.5)


# -- the handshake: one deadline, a constant-time comparison, a task that meets a full cap tries again --


def serve_handshakes(refuse_first: int, authkey: bytes, results: list[Any]) -> tuple[str, int]:
    """A driver's side on a real socket: closes the first ``refuse_first`` connections at once."""
    from multiprocessing.connection import Listener

    listener = Listener(("127.0.0.1", 0))

    def run() -> None:
        with listener:
            for _ in range(refuse_first):
                listener.accept().close()
            conn = listener.accept()
            try:
                authenticate(conn, authkey, time.monotonic() + 5)
                results.append("proven")
            except Exception as err:
                results.append(err)
            finally:
                conn.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.address


@pytest.mark.unit
def test_a_task_that_meets_a_full_cap_connects_again_and_proves_its_key() -> None:
    key = b"k" * 32
    results: list[Any] = []
    address = serve_handshakes(3, key, results)
    with connect(address, key, patience_s=10) as conn:
        assert conn.fileno() >= 0
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert results == ["proven"]


@pytest.mark.unit
def test_a_wrong_key_is_not_tried_again() -> None:
    results: list[Any] = []
    address = serve_handshakes(0, b"k" * 32, results)
    with pytest.raises(AuthenticationError):
        connect(address, b"x" * 32, patience_s=10)


@pytest.mark.unit
def test_the_drivers_digest_check_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """multiprocessing's own check (Python 3.11) compares with ==, which returns at the first wrong byte."""
    from multiprocessing.connection import Client

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    results: list[Any] = []
    address = serve_handshakes(0, b"k" * 32, results)
    with pytest.raises(AuthenticationError):
        Client(address, authkey=b"x" * 32)
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert isinstance(results[0], AuthenticationError)
    assert any(len(a) == len(b) == 16 for a, b in compared)  # the 16-byte digest, through compare_digest


@pytest.mark.unit
def test_a_flood_over_the_cap_is_one_line_when_it_starts_and_one_count_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert max_pending(2) == 16 and max_pending(20) == 40
    over = OverCap(16)
    with caplog.at_level(logging.WARNING):
        for port in range(500):
            over.refused(f"10.0.0.1:{port}")
        over.admitted()
        over.admitted()  # no flood since: nothing more
        over.refused("10.0.0.2:1")
        over.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "trial channel: closed a connection from 10.0.0.1:0 at once: 16 connections are already proving "
        "their key, the most allowed; a resident task connects again, and further closed connections are "
        "counted here",
        "trial channel: closed 500 connection(s) at once, over the cap of 16 connections not yet "
        "authenticated (500 this run)",
        "trial channel: closed a connection from 10.0.0.2:1 at once: 16 connections are already proving "
        "their key, the most allowed; a resident task connects again, and further closed connections are "
        "counted here",
        "trial channel: closed 1 connection(s) at once, over the cap of 16 connections not yet "
        "authenticated (501 this run)",
    ]
