"""The trial book: what the dispatcher and the watcher do once per trial costs the same at any history size."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest

from airflow_provider_sparktune.tuning.dispatch.trials import TrialBook
from airflow_provider_sparktune.tuning.earlier_trials import new_trial_doc

LABELS = ("x",)
HISTORY = 2000


class NoScan(list):  # type: ignore[type-arg]
    """hyperopt's document list that refuses to be walked from the start: only a scan iterates it."""

    def __iter__(self) -> Any:
        raise AssertionError("the whole trial history was scanned")


def start_trial(book: TrialBook, stamp: datetime) -> dict[str, Any]:
    """What the resident dispatcher does to start a trial: a new id, a new document, made visible."""
    (tid,) = book.new_ids(1)
    book.add([new_trial_doc(book.trials, tid, {"x": tid / 10_000}, LABELS)])
    trial = book.find(tid)
    assert trial is not None and trial["tid"] == tid
    trial["state"], trial["book_time"], trial["refresh_time"] = 1, stamp, stamp
    return trial


def finish_trial(book: TrialBook, trial: dict[str, Any], state: int, stamp: datetime) -> None:
    if state == 2:
        trial["result"] = {"loss": trial["misc"]["vals"]["x"][0], "status": "ok"}
    else:
        trial["misc"]["error"] = ("failed", "boom")
    trial["refresh_time"], trial["state"] = stamp, state
    book.refresh()


def book_with_history(n: int) -> tuple[TrialBook, datetime]:
    book = TrialBook(None, parallelism=2, timeout=None)
    stamp = datetime(2026, 12, 1)
    for i in range(n):
        stamp += timedelta(milliseconds=1)
        finish_trial(book, start_trial(book, stamp), 2 if i % 10 else 3, stamp)
    book.newly_finished()
    return book, stamp


def full_refresh(book: TrialBook) -> list[dict[str, Any]]:
    """What hyperopt's own ``Trials.refresh`` would make visible."""
    return [t for t in list.__iter__(book.trials._dynamic_trials) if t["state"] in (0, 1, 2)]


@pytest.mark.unit
def test_finding_a_trial_does_not_scan_the_history() -> None:
    book, stamp = book_with_history(HISTORY)
    book.trials._dynamic_trials = NoScan(book.trials._dynamic_trials)
    book.find(HISTORY - 1)  # the index has caught up
    for tid in (0, HISTORY // 2, HISTORY - 1):
        trial = book.find(tid)
        assert trial is not None and trial["tid"] == tid
    assert book.find(HISTORY + 5) is None


@pytest.mark.unit
def test_refresh_does_not_rebuild_the_visible_trials_from_every_document() -> None:
    book, stamp = book_with_history(HISTORY)
    book.trials._dynamic_trials = NoScan(book.trials._dynamic_trials)
    for i in range(50):
        stamp += timedelta(milliseconds=1)
        finish_trial(book, start_trial(book, stamp), 2 if i % 3 else 4, stamp)
    assert book.trials.trials == full_refresh(book)


@pytest.mark.unit
def test_the_watcher_looks_only_at_trials_it_has_not_seen_finish() -> None:
    book, stamp = book_with_history(HISTORY)
    book.trials._dynamic_trials = NoScan(book.trials._dynamic_trials)
    running = start_trial(book, stamp)
    assert book.newly_finished() == []
    finish_trial(book, running, 2, stamp + timedelta(seconds=1))
    assert [t["tid"] for t in book.newly_finished()] == [HISTORY]
    assert book.newly_finished() == []


@pytest.mark.unit
def test_the_visible_trials_and_the_finished_ones_match_hyperopts_own_bookkeeping() -> None:
    """Trials started, failed, finished and cancelled in a random order, some long-running."""
    rng = random.Random(7)
    book = TrialBook(None, parallelism=4, timeout=None)
    stamp = datetime(2026, 12, 1)
    running: list[dict[str, Any]] = []
    seen: list[int] = []
    for step in range(600):
        stamp += timedelta(milliseconds=1)
        if len(running) < 4 and rng.random() < 0.6:
            running.append(start_trial(book, stamp))
        elif running:
            trial = running.pop(rng.randrange(len(running)))
            finish_trial(book, trial, rng.choice((2, 2, 2, 3, 4)), stamp)
        if step % 7 == 0:
            seen += [t["tid"] for t in book.newly_finished()]
        assert book.trials.trials == full_refresh(book)
    book.cancel_open("test", stamp=True)
    book.refresh()
    assert book.trials.trials == full_refresh(book)
    seen += [t["tid"] for t in book.newly_finished()]
    every = list(book.trials._dynamic_trials)
    assert sorted(seen) == [t["tid"] for t in every] == list(range(len(every)))  # each once
    assert book.trials._ids >= {t["tid"] for t in every}


@pytest.mark.unit
def test_a_refresh_of_hyperopts_own_is_picked_up() -> None:
    """fmin (the sparktrials dispatcher) or a user may refresh the trials object directly."""
    book, stamp = book_with_history(20)
    trial = start_trial(book, stamp)
    book.trials.refresh()
    finish_trial(book, trial, 3, stamp)
    assert book.trials.trials == full_refresh(book)
    assert trial not in book.trials.trials
