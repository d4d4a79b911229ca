"""The socket between the driver and its resident trial tasks: who may connect, and what may cross it.

The driver listens; each resident task connects, proves it holds the run's key and then asks for
trials. The key check (``multiprocessing``'s challenge and answer, its digest compared in constant
time) runs per connection, all of it within one deadline from accept, so a connection that sends
nothing, or a byte now and then, holds up no one else for long; at most :func:`max_pending`
connections prove their key at once, and further ones are closed at once and counted in the log.

The driver trusts nothing an executor sends: a message is JSON of a known shape, at most
``MAX_MESSAGE_BYTES``, never a pickle. A result carries exactly the keys the run reads (loss,
status, loss_variance, metrics, failure, the learning curve and the pruned step); the executor
checks its own result against the same rules before it sends it, so an objective that returns
something else (``{"loss": ..., "model": fitted}``) fails its trial with a message that says so,
and a peer that breaks the rules fails only the trial it was running. What the driver sends (the
concrete parameters) stays pickled: the executor trusts the driver it authenticated.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import select
import struct
import time
from collections.abc import Mapping
from multiprocessing import AuthenticationError
from typing import Any

from airflow_provider_sparktune.exceptions import ObjectiveError, SparkConnectionError
from airflow_provider_sparktune.tuning.dispatch.launch import CALLBACK_BIND_CONF, CALLBACK_HOST_CONF
from airflow_provider_sparktune.tuning.trial import CURVE_KEY, LOSSES_KEY, PRUNED_STEP_KEY

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0  # from accept to a proven key: the whole challenge and answer
MIN_PENDING = 16  # connections proving their key at once, at least (max_pending)
CONNECT_PATIENCE_S = 60.0  # a resident task connecting to a driver whose cap is full tries again this long
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


def max_pending(parallelism: int) -> int:
    """Connections that may be proving their key at once: every task of a job at once, twice over."""
    return max(2 * parallelism, MIN_PENDING)


def authenticate(conn: Any, authkey: bytes, deadline: float) -> None:
    """Driver side: both sides prove they hold ``authkey``, all of it before ``deadline`` (monotonic).

    One deadline for the whole challenge and answer, not a limit per read: a peer that sends a byte
    now and then is cut at the deadline all the same. Raises ``AuthenticationError`` for a wrong key,
    ``TimeoutError`` at the deadline, ``EOFError``/``OSError`` for a peer that goes away.
    """
    fd = conn.fileno()
    _deliver_challenge(fd, authkey, deadline)
    _answer_challenge(fd, authkey, deadline)


def connect(address: tuple[str, int], authkey: bytes, patience_s: float = CONNECT_PATIENCE_S) -> Any:
    """Executor side: a connection to the driver that proved, both ways, that it holds ``authkey``.

    A driver with :func:`max_pending` connections proving their key already closes a new one at
    once (a flood of silent connections, say): the task connects again, with a growing pause, for
    ``patience_s`` seconds. A wrong key is not retried.
    """
    from multiprocessing.connection import Client

    give_up, pause = time.monotonic() + patience_s, 0.1
    while True:
        conn = Client(address)  # no authkey: the challenge and answer below, with a deadline
        try:
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
            _answer_challenge(conn.fileno(), authkey, deadline)
            _deliver_challenge(conn.fileno(), authkey, deadline)
            return conn
        except (EOFError, ConnectionError, TimeoutError):
            conn.close()
            if time.monotonic() + pause > give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        except BaseException:
            conn.close()
            raise


class OverCap:
    """Connections closed at once because :func:`max_pending` others were proving their key.

    A flood is one warning line when it starts and one that counts it when it ends (a connection
    is let in again, or the listener closes), with a count at most every ``summary_every_s`` while
    it lasts: not a line per connection.
    """

    def __init__(self, cap: int, summary_every_s: float = 60.0) -> None:
        self.cap, self.summary_every_s = cap, summary_every_s
        self.total = 0  # this run
        self._flood = 0  # this flood, since its last line
        self._last_line: float | None = None  # None: no flood going on

    def refused(self, peer: str) -> None:
        self.total += 1
        self._flood += 1
        now = time.monotonic()
        if self._last_line is None:
            log.warning(
                "trial channel: closed a connection from %s at once: %d connections are already proving "
                "their key, the most allowed; a resident task connects again, and further closed "
                "connections are counted here",
                peer,
                self.cap,
            )
            self._last_line = now
        elif now - self._last_line >= self.summary_every_s:
            self._summary()
            self._last_line = now

    def admitted(self) -> None:
        """A connection was let in: a flood, if there was one, is over."""
        if self._last_line is not None:
            self._summary()
            self._last_line = None

    close = admitted

    def _summary(self) -> None:
        if self._flood:
            log.warning(
                "trial channel: closed %d connection(s) at once, over the cap of %d connections not yet "
                "authenticated (%d this run)",
                self._flood,
                self.cap,
                self.total,
            )
        self._flood = 0


# multiprocessing.connection's challenge and answer, byte for byte (its Client and Listener speak it),
# with the deadline over all of it and the digest compared in constant time.
_CHALLENGE, _WELCOME, _FAILURE = b"#CHALLENGE#", b"#WELCOME#", b"#FAILURE#"
_NONCE_BYTES = 20
_MAX_HANDSHAKE_MESSAGE = 256


def _deliver_challenge(fd: int, authkey: bytes, deadline: float) -> None:
    nonce = os.urandom(_NONCE_BYTES)
    _send_frame(fd, _CHALLENGE + nonce, deadline)
    expected = hmac.new(authkey, nonce, "md5").digest()
    if hmac.compare_digest(_recv_frame(fd, deadline), expected):
        _send_frame(fd, _WELCOME, deadline)
        return
    _send_frame(fd, _FAILURE, deadline)
    raise AuthenticationError("digest received was wrong")


def _answer_challenge(fd: int, authkey: bytes, deadline: float) -> None:
    message = _recv_frame(fd, deadline)
    if not message.startswith(_CHALLENGE):
        raise AuthenticationError("the peer sent no challenge")
    _send_frame(fd, hmac.new(authkey, message[len(_CHALLENGE) :], "md5").digest(), deadline)
    if not hmac.compare_digest(_recv_frame(fd, deadline), _WELCOME):
        raise AuthenticationError("digest sent was rejected")


def _recv_frame(fd: int, deadline: float) -> bytes:
    (size,) = struct.unpack("!i", _recv_exact(fd, 4, deadline))
    if not 0 <= size <= _MAX_HANDSHAKE_MESSAGE:
        raise AuthenticationError(f"a handshake message of {size} bytes")
    return _recv_exact(fd, size, deadline)


def _recv_exact(fd: int, size: int, deadline: float) -> bytes:
    """``size`` bytes, read as they come, but none after ``deadline``."""
    data = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while len(data) < size:
        _wait(poller, deadline)
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the peer closed the connection")
        data += chunk
    return bytes(data)


def _send_frame(fd: int, payload: bytes, deadline: float) -> None:
    data = memoryview(struct.pack("!i", len(payload)) + payload)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while data:
        _wait(poller, deadline)
        data = data[os.write(fd, data) :]


def _wait(poller: Any, deadline: float) -> None:
    """Until the descriptor is ready; ``TimeoutError`` at ``deadline``."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the handshake's deadline passed")
        if poller.poll(max(1, math.ceil(remaining * 1000))):
            return


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
