from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_sparktune.tracking.durable import RetryingWriter


class FlakyStore:
    """Refuses every write until ``up`` is set, then records them."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.written: list[int] = []
        self.refused = 0

    def write(self, item: int) -> None:
        if not self.up.is_set():
            self.refused += 1
            raise ConnectionError("connection refused")
        self.written.append(item)


@pytest.mark.unit
def test_writes_wait_out_an_outage_in_order_without_blocking_the_caller() -> None:
    store = FlakyStore()
    writer = RetryingWriter(first_delay_s=0.05, max_delay_s=0.2)
    started = time.monotonic()
    for i in range(5):
        writer.submit(f"trial {i}", lambda i=i: store.write(i))
    assert time.monotonic() - started < 0.5  # submit never waits for the store
    time.sleep(0.5)
    assert store.written == [] and store.refused >= 2
    store.up.set()
    assert writer.close(timeout_s=10) == []
    assert store.written == [0, 1, 2, 3, 4]
    assert writer.failures == store.refused


@pytest.mark.unit
def test_close_returns_what_never_got_written() -> None:
    store = FlakyStore()
    writer = RetryingWriter(first_delay_s=0.05, max_delay_s=0.1)
    writer.submit("trial 0", lambda: store.write(0))
    writer.submit("trial 1", lambda: store.write(1))
    started = time.monotonic()
    left = writer.close(timeout_s=1)
    assert 0.9 <= time.monotonic() - started < 8
    assert [w.what for w in left] == ["trial 0", "trial 1"]
    assert "connection refused" in (writer.last_error or "")
