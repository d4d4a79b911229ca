"""A write-behind queue in front of MLflow: writes in order, retries with backoff, never blocks the caller.

A tracking server that restarts in the middle of a nightly run must not fail the run or stall the
dispatch of trials. Each write (a trial's child run, the run's parameters) is queued and carried
out by one thread in submission order; a write that fails is retried, with the delay doubling up to
a cap, until it succeeds. At the end, :meth:`close` waits for the queue to drain up to a deadline
and returns what is still unwritten, so the caller can fail the task with everything in its log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Write:
    """One queued write: what it is (for the log) and the call that does it."""

    what: str
    call: Callable[[], Any]


class RetryingWriter:
    """One background thread working through writes in order; a failed write is retried, not skipped."""

    def __init__(self, *, first_delay_s: float = 0.5, max_delay_s: float = 5.0) -> None:
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self._pending: deque[Write] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self.failures = 0  # failed attempts, for the task log and tests
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._work, name="sparktune-mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, what: str, call: Callable[[], Any]) -> None:
        """Queue a write; returns at once."""
        with self._cond:
            self._pending.append(Write(what, call))
            self._cond.notify_all()

    def close(self, timeout_s: float) -> list[Write]:
        """Wait up to ``timeout_s`` for every queued write; return the writes that never succeeded."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + 5)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        return left

    def _work(self) -> None:
        delay = self.first_delay_s
        outage_since: float | None = None
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    return
                write = self._pending[0]
            try:
                write.call()
            except Exception as err:
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {str(err)[:300]}"
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning(
                        "MLflow write failed (%s): %s; keeping %d write(s) and retrying with backoff",
                        write.what,
                        self.last_error,
                        len(self._pending),
                    )
                with self._cond:
                    wait = delay
                    if self._deadline is not None:
                        wait = min(wait, max(0.0, self._deadline - time.monotonic()))
                    self._cond.wait(wait)
                delay = min(delay * 2, self.max_delay_s)
                continue
            if outage_since is not None:
                log.warning(
                    "MLflow writes succeed again after %.1f s; writing %d queued write(s)",
                    time.monotonic() - outage_since,
                    len(self._pending),
                )
                outage_since, delay = None, self.first_delay_s
            with self._cond:
                self._pending.popleft()
