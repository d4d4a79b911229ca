"""The socket between the driver and its resident trial tasks: who may connect, and what may cross it.

The driver listens; each resident task connects, proves it holds the run's key and then asks for
trials. The key check (``multiprocessing``'s challenge and answer) runs per connection with a time
limit, so a connection that sends nothing holds up no one else.

The driver trusts nothing an executor sends: a message is JSON of a known shape, at most
``MAX_MESSAGE_BYTES``, never a pickle. A result carries exactly the keys the run reads (loss,
status, loss_variance, metrics, failure, the learning curve and the pruned step); the executor
checks its own result against the same rules before it sends it, so an objective that returns
something else (``{"loss": ..., "model": fitted}``) fails its trial with a message that says so,
and a peer that breaks the rules fails only the trial it was running. What the driver sends (the
concrete parameters) stays pickled: the executor trusts the driver it authenticated.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import struct
from collections.abc import Mapping
from typing import Any

from airflow_provider_sparktune.exceptions import ObjectiveError, SparkConnectionError
from airflow_provider_sparktune.tuning.dispatch.launch import CALLBACK_BIND_CONF, CALLBACK_HOST_CONF
from airflow_provider_sparktune.tuning.trial import CURVE_KEY, LOSSES_KEY, PRUNED_STEP_KEY

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0  # for a task to prove it holds the run's key, once connected
MAX_MESSAGE_BYTES = 1 << 20  # one message from an executor: a result with a long curve fits
MAX_ERROR_CHARS = 20_000  # of a failed trial's traceback (its end, where the error is)
RESULT_KEYS = (
    "loss", "status", "loss_variance", "metrics", "failure", CURVE_KEY, PRUNED_STEP_KEY, LOSSES_KEY
)  # fmt: skip


class ChannelError(ValueError):
    """A message from a resident task that breaks the channel's rules."""


# -- who may connect ------------------------------------------------------------------------------


def listen(host: str, parallelism: int, bind: str | None = None) -> Any:
    """The driver's listener, with room for every task connecting at the same moment.

    With warm workers all tasks connect at once; at the default backlog of 1 the kernel drops the
    other connection attempts and TCP retries them 1, 3, 7, 15 s later. The listener does not
    check keys itself (its ``accept`` would wait for each handshake in turn): :func:`authenticate`
    does, per connection. A callback host that is not an address of this machine needs an explicit
    bind address: listening on every interface is a choice to make, not a fallback.
    """
    from multiprocessing.connection import Listener

    backlog = parallelism + 16
    address = host if bind is None else bind
    try:
        listener = Listener((address, 0), backlog=backlog)
    except OSError as err:
        if bind is not None:
            raise SparkConnectionError(
                f"{CALLBACK_BIND_CONF}: cannot listen on {bind!r} ({err}); set it to an address of this "
                "machine (0.0.0.0: every interface)"
            ) from None
        raise SparkConnectionError(
            f"{CALLBACK_HOST_CONF}: {host!r} is not an address of this machine ({err}), so the resident "
            f"trial tasks cannot be listened for there; set {CALLBACK_BIND_CONF} to the local address "
            "their connections arrive at (behind a NAT, say; 0.0.0.0 listens on every interface)"
        ) from None
    if address in ("0.0.0.0", "::", ""):
        log.info("listening for resident trial tasks on every interface (%s=%s)", CALLBACK_BIND_CONF, bind)
    return listener


def authenticate(conn: Any, authkey: bytes, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Both sides prove they hold ``authkey``, within ``timeout_s`` seconds per read or write.

    Raises ``AuthenticationError`` for a wrong key, ``OSError``/``EOFError`` for a peer that is too
    slow or goes away. The time limit is set on the socket (not with ``settimeout``, which would make
    the connection non-blocking for good) and lifted again afterwards: a trial may run for hours.
    """
    from multiprocessing.connection import answer_challenge, deliver_challenge

    with socket.socket(fileno=os.dup(conn.fileno())) as sock:  # the same socket: its options are shared
        _socket_timeout(sock, timeout_s)
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
        _socket_timeout(sock, 0.0)


def _socket_timeout(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


# -- what crosses it: executor side ---------------------------------------------------------------


def encode(message: list[Any]) -> bytes:
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode()


def result_message(tid: int, result: Any, eval_s: float) -> bytes:
    """A finished trial's reply; a result that cannot travel becomes that trial's error instead."""
    try:
        data = encode(["ok", tid, check_result(result), eval_s])
    except (ChannelError, ObjectiveError) as err:
        return error_message(tid, "ObjectiveError", str(err), eval_s)
    if len(data) > MAX_MESSAGE_BYTES:
        return error_message(
            tid,
            "ObjectiveError",
            f"the objective's result is {len(data)} bytes as JSON, over the {MAX_MESSAGE_BYTES} bytes a "
            "result may take back to the driver; report fewer steps or metrics",
            eval_s,
        )
    return data


def error_message(tid: int, kind: str, text: str, eval_s: float) -> bytes:
    """A failed trial's reply: its error type and the end of its traceback."""
    return encode(["error", tid, kind[:200], _tail(text, MAX_ERROR_CHARS), eval_s])


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "...[cut]" + text[-limit:]


# -- what crosses it: driver side -----------------------------------------------------------------


def receive(conn: Any) -> list[Any]:
    """The next message from a resident task, decoded and checked; ``ChannelError`` when it breaks the rules.

    ``EOFError``/``OSError``: the connection is gone.
    """
    try:
        data = conn.recv_bytes(MAX_MESSAGE_BYTES)
    except OSError as err:
        if "bad message length" in str(err):  # over the cap: multiprocessing read only its header
            raise ChannelError(f"a message over {MAX_MESSAGE_BYTES} bytes") from None
        raise
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ChannelError(f"a message that is not JSON ({bytes(data[:60])!r}...)") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ChannelError(f"a message that is not a [kind, ...] list ({_short(message)})")
    return _checked(message)


def _checked(message: list[Any]) -> list[Any]:
    kind, size = message[0], len(message)
    if kind == "ready" and size == 1:
        return message
    if kind == "report" and size == 3:
        return [kind, _count(message[1], "report step"), _number(message[2], "report value")]
    if kind == "ok" and size == 4:
        return [kind, _count(message[1], "trial id"), check_result(message[2]), _seconds(message[3])]
    if kind == "error" and size == 5 and isinstance(message[2], str) and isinstance(message[3], str):
        return [kind, _count(message[1], "trial id"), message[2][:200], _tail(message[3], MAX_ERROR_CHARS),
                _seconds(message[4])]  # fmt: skip
    raise ChannelError(f"an unknown message ({_short(message)})")


def check_result(result: Any) -> dict[str, Any]:
    """Exactly the known keys of a trial result, with plain, finite numbers: on both sides of the socket."""
    if not isinstance(result, Mapping):
        raise ChannelError(f"a result of type {type(result).__name__}, not a dict")
    unknown = sorted(str(key) for key in result if key not in RESULT_KEYS)
    if unknown:
        raise ChannelError(
            f"the objective returned key(s) {', '.join(map(repr, unknown))}: a result carries only loss, "
            "status, loss_variance, metrics ({name: number}) and failure (text) back to the driver; save "
            "models and other objects from inside the objective (to MLflow or storage) and return "
            "numbers under metrics"
        )
    status = result.get("status", "ok")
    if status not in ("ok", "fail"):
        raise ChannelError(f"status {_short(status)}; use 'ok' or 'fail'")
    checked: dict[str, Any] = {"status": status}
    if "loss" in result or status == "ok":
        checked["loss"] = _number(result.get("loss"), "loss")
    if "loss_variance" in result:
        checked["loss_variance"] = _number(result["loss_variance"], "loss_variance")
    if result.get("metrics") is not None:
        checked["metrics"] = _metrics(result["metrics"])
    if "failure" in result:
        checked["failure"] = _tail(str(result["failure"]), MAX_ERROR_CHARS)
    if result.get(CURVE_KEY) is not None:
        curve = result[CURVE_KEY]
        if not isinstance(curve, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in curve
        ):
            raise ChannelError("a learning curve that is not a list of (step, value) pairs")
        checked[CURVE_KEY] = [[_count(s, "curve step"), _number(v, "curve value")] for s, v in curve]
    if result.get(LOSSES_KEY) is not None:
        checked[LOSSES_KEY] = _metrics(result[LOSSES_KEY])
    if result.get(PRUNED_STEP_KEY) is not None:
        checked[PRUNED_STEP_KEY] = _count(result[PRUNED_STEP_KEY], "pruned step")
    return checked


def _metrics(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ChannelError(f"metrics of type {type(metrics).__name__}; use a dict of name: number")
    checked = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or len(name) > 500:
            raise ChannelError(f"metrics key {_short(name)}: not a name")
        checked[name] = _number(value, f"metrics.{name}")
    return checked


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ChannelError(f"{what} {_short(value)}: not a finite number")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ChannelError(f"{what} {_short(value)}: not a non-negative integer")
    return value


def _seconds(value: Any) -> float:
    return max(0.0, _number(value, "evaluation time"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
