"""A write-behind queue in front of MLflow: retries with backoff, never blocks the caller.

A tracking server that restarts in the middle of a nightly run must not fail the run or stall the
dispatch of trials. Each write (a trial's child run, the run's parameters) is queued and carried
out by a writer thread; a write that fails is retried, with the delay doubling up to a cap, until it
succeeds, unless MLflow refused the request itself (a 4xx such as ``INVALID_PARAMETER_VALUE``): that
write fails alone, logged as an error, and the rest go on. With one thread (SQLite stores, where writers only queue for the database lock) writes
happen in submission order. A tracking server answers requests side by side, so several threads
keep several trial runs in flight there: each trial run is three round trips, and one thread
writing 400 of them one after the other would keep a finished task waiting for a quarter of a
minute. A write submitted with ``after_all`` (closing the parent run FINISHED) starts only once every
earlier write is done. At the end, :meth:`close` waits for the queue to drain up to a
deadline and returns what is still unwritten, so the caller can fail the task with everything in
its log.

The queue is bounded: at ``max_pending`` queued writes (counting the trials started and not yet
reported) :meth:`wait_for_room` blocks, and the run waits there before it starts another trial
(back-pressure). A write is never dropped and :meth:`submit` never blocks (the watcher that calls
it also carries out a kill). A
nightly run of 100,000 cheap trials against a slow tracking server then runs at the server's pace
instead of queueing trial runs for hours after its last trial.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_sparktune.redaction import redact_text

log = logging.getLogger(__name__)

SERVER_WRITERS = 8  # writer threads against a tracking server
MAX_PENDING = 1000  # queued writes at which the run waits before starting another trial


@dataclass(frozen=True)
class Write:
    """One queued write: what it is (for the log), the call that does it, and whether it waits for the rest."""

    what: str
    call: Callable[[], Any]
    after_all: bool = False
    data: Any = None  # what it writes, as JSON-native data: logged when it never reaches MLflow


def is_refused(err: BaseException) -> bool:
    """MLflow refused the request itself (a 4xx: a bad name or value, a missing run, no permission),
    as opposed to an outage: retrying would send the same request to the same refusal."""
    status = getattr(err, "get_http_status_code", None)
    if not callable(status):
        return False
    try:
        code = int(status())
    except (TypeError, ValueError):
        return False
    return 400 <= code < 500 and code not in (408, 429)


class RetryingWriter:
    """Writer threads working through queued writes; a failed write is retried, not skipped."""

    def __init__(
        self,
        *,
        workers: int = 1,
        first_delay_s: float = 0.5,
        max_delay_s: float = 5.0,
        max_pending: int | None = None,
    ) -> None:
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self.max_pending = max(1, MAX_PENDING if max_pending is None else max_pending)
        self._pending: deque[Write] = deque()
        self._in_flight: list[Write] = []  # taken by a thread, not yet written
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self._outage_since: float | None = None
        self.failures = 0  # failed attempts, for the task log and tests
        self.last_error: str | None = None
        self.rejected: list[Write] = []  # refused by MLflow itself: not retried, reported by close()
        self._threads = [
            threading.Thread(target=self._work, name=f"sparktune-mlflow-writer-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        what: str,
        call: Callable[[], Any],
        *,
        after_all: bool = False,
        ahead: bool = False,
        data: Any = None,
    ) -> None:
        """Queue a write; returns at once, also past ``max_pending`` (see :meth:`wait_for_room`).

        ``after_all``: start it once every earlier write is done. ``ahead``: start it before the writes
        already queued (the run summary, so that it is written beside the trial runs, not after them).
        ``data``: what the write carries, for the log when it never gets through.
        """
        with self._cond:
            if ahead:
                self._pending.appendleft(Write(what, call, after_all, data))
            else:
                self._pending.append(Write(what, call, after_all, data))
            self._cond.notify_all()

    def wait_for_room(self, timeout_s: float, coming: int = 0) -> bool:
        """Wait up to ``timeout_s`` until the queue has room for ``coming`` writes more (fewer than
        ``max_pending`` in all); True if so.

        ``coming``: writes the caller will submit anyway (trials running or finished, not yet
        reported). Closing the writer makes room: nothing waits for a queue being given up on.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._pending) + coming >= self.max_pending and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    @property
    def queued(self) -> int:
        """Writes not yet started (the ones in flight are not counted)."""
        with self._cond:
            return len(self._pending)

    def close(self, timeout_s: float) -> list[Write]:
        """Wait up to ``timeout_s`` for every queued write; return the writes that never succeeded."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.monotonic()) + 5)
        with self._cond:
            left = [*self.rejected, *self._in_flight, *self._pending]
            self._pending.clear()
            self._in_flight.clear()
            self._cond.notify_all()
        return left

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _take(self) -> Write | None:
        """The next write this thread may start; None when the queue is done or the deadline passed."""
        with self._cond:
            while True:
                if self._past_deadline():
                    return None
                if self._pending and not (self._pending[0].after_all and self._in_flight):
                    write = self._pending.popleft()
                    self._in_flight.append(write)
                    self._cond.notify_all()  # room in the queue for a run waiting in wait_for_room
                    return write
                if not self._pending and self._closing:
                    return None
                remaining = None if self._deadline is None else self._deadline - time.monotonic()
                self._cond.wait(remaining)

    def _work(self) -> None:
        while (write := self._take()) is not None:
            if not self._write(write):
                return  # the deadline passed while it kept failing: close() reports it

    def _write(self, write: Write) -> bool:
        delay = self.first_delay_s
        while True:
            try:
                write.call()
            except Exception as err:
                with self._cond:
                    self.failures += 1
                    self.last_error = f"{type(err).__name__}: {redact_text(str(err))[:300]}"
                    if is_refused(err):  # the same request would be refused again: it fails alone
                        log.error(
                            "MLflow refused a write (%s): %s; it is not retried, the other writes go on",
                            write.what,
                            self.last_error,
                        )
                        self.rejected.append(write)
                        self._in_flight = [w for w in self._in_flight if w is not write]
                        self._cond.notify_all()
                        return True
                    if self._outage_since is None:
                        self._outage_since = time.monotonic()
                        log.warning(
                            "MLflow write failed (%s): %s; keeping %d write(s) and retrying with backoff",
                            write.what,
                            self.last_error,
                            len(self._pending) + len(self._in_flight),
                        )
                    retry_at = time.monotonic() + delay
                    while not self._past_deadline() and (left := retry_at - time.monotonic()) > 0:
                        wait = (
                            left if self._deadline is None else min(left, self._deadline - time.monotonic())
                        )
                        self._cond.wait(max(0.0, wait))
                    if self._past_deadline():
                        return False
                delay = min(delay * 2, self.max_delay_s)
                continue
            with self._cond:
                if self._outage_since is not None:
                    log.warning(
                        "MLflow writes succeed again after %.1f s; writing %d queued write(s)",
                        time.monotonic() - self._outage_since,
                        len(self._pending) + len(self._in_flight) - 1,
                    )
                    self._outage_since = None
                self._in_flight = [w for w in self._in_flight if w is not write]
                self._cond.notify_all()
            return True
