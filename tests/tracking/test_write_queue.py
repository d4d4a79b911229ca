from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_sparktune.tracking.write_queue import RetryingWriter


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


@pytest.mark.unit
def test_several_writers_keep_writes_in_flight_side_by_side_and_the_summary_waits_for_all() -> None:
    in_flight = 0
    most = 0
    done: list[str] = []
    lock = threading.Lock()
    four_at_once = threading.Barrier(4, timeout=10)

    def trial_write(name: str) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        four_at_once.wait()  # breaks (and the write fails) unless four writes run at the same time
        time.sleep(0.05)
        with lock:
            in_flight -= 1
            done.append(name)

    def summary() -> None:
        with lock:
            done.append(f"summary after {len(done)} trial writes, {in_flight} in flight")

    writer = RetryingWriter(workers=4, first_delay_s=0.05)
    for i in range(8):
        writer.submit(f"trial {i}", lambda i=i: trial_write(f"trial {i}"))
    writer.submit("run summary", summary, after_all=True)
    assert writer.close(timeout_s=30) == []
    assert writer.failures == 0 and most == 4
    assert sorted(done[:8]) == [f"trial {i}" for i in range(8)]
    assert done[8] == "summary after 8 trial writes, 0 in flight"


@pytest.mark.unit
def test_a_write_failing_past_the_deadline_is_returned_with_those_never_started() -> None:
    store = FlakyStore()
    writer = RetryingWriter(workers=2, first_delay_s=0.05, max_delay_s=0.1)
    for i in range(4):
        writer.submit(f"trial {i}", lambda i=i: store.write(i))
    writer.submit("run summary", lambda: store.write(99), after_all=True)
    left = writer.close(timeout_s=0.5)
    assert sorted(w.what for w in left) == ["run summary", "trial 0", "trial 1", "trial 2", "trial 3"]
    assert store.written == [] and writer.failures == store.refused >= 2


@pytest.mark.unit
def test_a_write_submitted_ahead_starts_before_the_writes_already_queued() -> None:
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def blocked_first() -> None:
        started.set()
        release.wait(10)
        done.append("trial 0")

    writer = RetryingWriter(workers=1)
    writer.submit("trial 0", blocked_first)
    assert started.wait(10)  # in flight, holding the only writer thread
    for i in range(1, 4):
        writer.submit(f"trial {i}", lambda i=i: done.append(f"trial {i}"))
    writer.submit("run summary", lambda: done.append("run summary"), ahead=True)
    writer.submit("closing the run", lambda: done.append("closing the run"), after_all=True)
    release.set()
    assert writer.close(timeout_s=10) == []
    assert done == ["trial 0", "run summary", "trial 1", "trial 2", "trial 3", "closing the run"]


@pytest.mark.integration
def test_a_write_mlflow_refuses_fails_alone_and_the_writes_behind_it_go_on(
    mlflow_uri: str, experiment_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_sparktune.tracking.tracker import TuningTracker

    tracker = TuningTracker(mlflow_uri, experiment_name)
    run_id = tracker.start(run_name="refused", tags={})
    writer = RetryingWriter(first_delay_s=0.05, max_delay_s=0.2)  # one thread: the order is the queue's
    writer.submit("bad metric", lambda: tracker.client.log_metric(run_id, "precision@10", 0.5))
    writer.submit("good metric", lambda: tracker.client.log_metric(run_id, "precision_10", 0.5))
    started = time.monotonic()
    left = writer.close(timeout_s=60)
    assert time.monotonic() - started < 20  # not retried until the deadline
    assert [w.what for w in left] == ["bad metric"]
    assert writer.failures == 1 and 'Invalid value "precision@10"' in (writer.last_error or "")
    assert tracker.client.get_run(run_id).data.metrics == {"precision_10": 0.5}
    assert "MLflow refused a write (bad metric)" in caplog.text


@pytest.mark.unit
def test_at_its_bound_the_queue_makes_the_run_wait_and_loses_no_write() -> None:
    store = FlakyStore()
    writer = RetryingWriter(first_delay_s=0.05, max_delay_s=0.1, max_pending=3)
    for i in range(4):  # one taken by the writer thread (failing, retried), three queued
        writer.submit(f"trial {i}", lambda i=i: store.write(i))
    deadline = time.monotonic() + 5
    while writer.queued > 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.queued == 3
    started = time.monotonic()
    assert writer.wait_for_room(0.3) is False  # the run would wait here before its next trial
    assert time.monotonic() - started >= 0.3
    writer.submit("trial 4", lambda: store.write(4))  # a trial that was already running: never dropped
    assert writer.queued == 4
    store.up.set()
    assert writer.wait_for_room(5) is True
    assert writer.close(timeout_s=10) == []
    assert store.written == [0, 1, 2, 3, 4]


@pytest.mark.unit
def test_a_closing_writer_lets_a_waiting_run_go_on() -> None:
    """A run that ends (or is killed) while the tracking server is down does not wait for it."""
    writer = RetryingWriter(first_delay_s=0.05, max_pending=1)
    writer.submit("trial 0", lambda: (_ for _ in ()).throw(ConnectionError("down")))
    writer.submit("trial 1", lambda: None)

    def close_soon() -> None:
        time.sleep(0.2)
        writer.close(3)

    closing = threading.Thread(target=close_soon)
    closing.start()
    started = time.monotonic()
    assert writer.wait_for_room(10) is True
    assert time.monotonic() - started < 2  # at close, not once close has given up 3 s later
    closing.join()
