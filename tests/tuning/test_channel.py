"""The trial channel's rules: who may listen where, and what a result may carry back to the driver."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.tuning.dispatch.channel import (
    MAX_MESSAGE_BYTES,
    ChannelError,
    check_result,
    listen,
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
