"""Trials of earlier runs, read back from MLflow: for resuming a retry and for a nightly warm start.

A trial run holds what is needed to rebuild its hyperopt trial: ``sparktune.vals`` (the values of the
active labels), ``sparktune.status``, the ``loss`` metric and its start and end times. Only trial runs
whose writing completed (status FINISHED or FAILED) are read; a run cut off mid-write, or a trial
cancelled by a kill, is run again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_sparktune.tracking import schema

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # trial runs a search request returns: every trial of a 100k-trial try is paged through
WARM_START_RUNS = 3  # the most recent successful runs of a tuning key that a warm start reads
# A page of the best trial runs holds this many per point asked for: equal points and misfits are skipped
WARM_START_PAGE_PER_POINT = 4
# Trial runs by start time, oldest first (MLflow adds the run id as the last tie-break): pages keep
# their order while a try that is still alive adds trial runs, which land behind what was read.
_OLDEST_FIRST = ["attributes.start_time ASC"]
_BEST_FIRST = ["metrics.loss ASC", "attributes.start_time ASC"]
_COMPLETE = {"FINISHED": "ok", "FAILED": "failed"}

EarlierStatus = Literal["ok", "failed", "pruned"]


@dataclass(frozen=True)
class EarlierTrial:
    """A finished trial of an earlier run, as read back from MLflow."""

    vals: dict[str, Any]  # {label: value} of the active labels, as in misc.vals without the lists
    status: EarlierStatus
    loss: float | None
    source_run_id: str  # the MLflow trial run it came from
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pruned_step: int | None = None  # a pruned trial: where it stopped; its loss is its last report


@dataclass(frozen=True)
class EarlierTries:
    """Parent runs of earlier tries of one task instance and the trials they finished."""

    parent_run_ids: tuple[str, ...]
    still_running: tuple[str, ...]  # parents a killed try could not close
    trials: tuple[EarlierTrial, ...]


@dataclass(frozen=True)
class WarmStartSource:
    """The best points of recent successful runs of a tuning key, best first."""

    parent_run_ids: tuple[str, ...]
    points: tuple[EarlierTrial, ...]


def _search(
    client: Any, experiment_id: str, filter_string: str, *, page_size: int | None = None, **kwargs: Any
) -> Iterator[Any]:
    """Runs matching ``filter_string``, page by page: a caller that stops early reads no further page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=page_size or PAGE_SIZE,
            page_token=token,
            **kwargs,
        )
        yield from page
        token = page.token
        if not token:
            return


def _tag_filter(tags: Mapping[str, str]) -> str:
    """``tags.`a.b` = 'v'`` clauses for the values that hold no quote or backslash (those are
    compared by the caller: they cannot go into a search)."""
    return " and ".join(
        f"tags.`{key}` = '{value}'" for key, value in tags.items() if "'" not in value and "\\" not in value
    )


def _has_tags(run: Any, tags: Mapping[str, str]) -> bool:
    return all(run.data.tags.get(key) == value for key, value in tags.items())


def earlier_tries(
    client: Any, experiment_id: str, *, attempt_tags: Mapping[str, str], current_parent: str
) -> EarlierTries:
    """Every earlier try of one run (parent runs carrying all ``attempt_tags``) and its finished trials.

    A point finished by more than one try (tries that ran side by side, a warm-start point both
    evaluated) is kept once, from the earliest try.
    """
    if not attempt_tags:
        raise ValueError("attempt_tags: at least one tag must identify the tries of a run")
    parents = [
        run
        for run in _search(client, experiment_id, _tag_filter(attempt_tags))
        if run.info.run_id != current_parent
        and _has_tags(run, attempt_tags)
        and schema.PARENT_RUN not in run.data.tags
    ]
    parents.sort(key=lambda run: run.info.start_time or 0)
    trials: list[EarlierTrial] = []
    earlier: set[str] = set()  # points of the tries before: two tries alive at once may share some
    for parent in parents:
        own = [
            t
            for t in trials_of(client, experiment_id, parent.info.run_id)
            if point_key(t.vals) not in earlier
        ]
        trials += own
        earlier.update(point_key(t.vals) for t in own)
    return EarlierTries(
        parent_run_ids=tuple(p.info.run_id for p in parents),
        still_running=tuple(p.info.run_id for p in parents if p.info.status == "RUNNING"),
        trials=tuple(trials),
    )


def trials_of(client: Any, experiment_id: str, parent_run_id: str) -> list[EarlierTrial]:
    """The completely written trial runs of one parent run, one per trial id, in trial id order.

    All of them, however many pages that takes: a resumed try counts them toward ``max_evals``.
    """
    by_tid: dict[int, EarlierTrial] = {}
    query = _tag_filter({schema.PARENT_RUN: parent_run_id})
    for run in _search(client, experiment_id, query, order_by=_OLDEST_FIRST):
        trial = _earlier_trial(run)
        if trial is None:
            continue
        tid = int(run.data.tags.get(schema.TID, -1))
        by_tid.setdefault(tid, trial)  # a write retried after a lost reply may have made two runs
    return [by_tid[tid] for tid in sorted(by_tid)]


def _earlier_trial(run: Any) -> EarlierTrial | None:
    tags, status = run.data.tags, _COMPLETE.get(run.info.status)
    if status is None or tags.get(schema.STATUS) not in ("ok", "failed", "pruned"):
        return None
    try:
        vals = json.loads(tags.get(schema.VALS, ""))
    except json.JSONDecodeError:
        log.warning(
            "trial run %s: %s is not JSON (truncated?); it will run again", run.info.run_id, schema.VALS
        )
        return None
    loss = run.data.metrics.get("loss")
    if not isinstance(vals, dict) or (tags[schema.STATUS] in ("ok", "pruned") and loss is None):
        return None
    metrics = {k: float(v) for k, v in run.data.metrics.items() if k != "loss"}
    return EarlierTrial(
        vals=vals,
        status=tags[schema.STATUS],
        loss=None if loss is None else float(loss),
        source_run_id=run.info.run_id,
        metrics=metrics,
        error=tags.get(schema.ERROR),
        pruned_step=int(tags[schema.PRUNED_STEP]) if schema.PRUNED_STEP in tags else None,
        started_at=None if run.info.start_time is None else run.info.start_time / 1000,
        finished_at=None if run.info.end_time is None else run.info.end_time / 1000,
    )


def warm_start_source(
    client: Any,
    experiment_id: str,
    *,
    tuning_key: str,
    k: int,
    exclude_tags: Mapping[str, str],
    runs: int = WARM_START_RUNS,
) -> WarmStartSource:
    """The ``k`` best distinct points of the ``runs`` most recent FINISHED runs of ``tuning_key``.

    Runs carrying all ``exclude_tags`` (earlier tries of the run being started) are skipped. Only the
    best trial runs of each are read (ordered by loss, a few pages at most), not every trial run of
    a night that ran 100,000.
    """
    query = _tag_filter({schema.TUNING_KEY: tuning_key}) + " and attributes.status = 'FINISHED'"
    parents = []
    pages = _search(client, experiment_id, query, page_size=runs + 5, order_by=["attributes.start_time DESC"])
    for run in pages:
        if (exclude_tags and _has_tags(run, exclude_tags)) or schema.PARENT_RUN in run.data.tags:
            continue
        parents.append(run)
        if len(parents) >= runs:
            break
    candidates = [trial for parent in parents for trial in best_trials_of(client, experiment_id, parent, k)]
    candidates.sort(key=lambda trial: trial.loss)  # type: ignore[arg-type, return-value]
    return WarmStartSource(tuple(p.info.run_id for p in parents), tuple(best_distinct(candidates, k)))


def best_trials_of(client: Any, experiment_id: str, parent: Any, k: int) -> list[EarlierTrial]:
    """The successful trial runs of ``parent`` holding its ``k`` best distinct points, best first."""
    query = (
        _tag_filter({schema.PARENT_RUN: parent.info.run_id, schema.STATUS: "ok"})
        + " and attributes.status = 'FINISHED'"
    )
    page_size = max(10, WARM_START_PAGE_PER_POINT * k)
    found: list[EarlierTrial] = []
    points: set[str] = set()
    for run in _search(client, experiment_id, query, page_size=page_size, order_by=_BEST_FIRST):
        trial = _earlier_trial(run)
        if trial is None or trial.status != "ok" or trial.loss is None:
            continue
        found.append(trial)
        points.add(point_key(trial.vals))
        if len(points) >= k:
            break
    return found


def best_distinct(trials: Sequence[EarlierTrial], k: int) -> list[EarlierTrial]:
    """The first ``k`` trials with distinct points (trials already sorted best first)."""
    seen: set[str] = set()
    chosen: list[EarlierTrial] = []
    for trial in trials:
        key = point_key(trial.vals)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(trial)
        if len(chosen) >= k:
            break
    return chosen


def point_key(vals: Any) -> str:
    return json.dumps(vals, sort_keys=True)


def previous_best_loss(
    client: Any, experiment_id: str, *, tuning_key: str, current_run: str, exclude_tags: Mapping[str, str]
) -> float | None:
    """The lowest ``best_loss`` of the earlier FINISHED runs of ``tuning_key``: what tonight must beat.

    ``None`` on the first night. Runs carrying all ``exclude_tags`` (other tries of tonight's run) and
    ``current_run`` itself are skipped, so a retry compares with the nights before, not with itself.
    """
    query = _tag_filter({schema.TUNING_KEY: tuning_key}) + " and attributes.status = 'FINISHED'"
    for run in _search(client, experiment_id, query, order_by=["metrics.best_loss ASC"]):
        if run.info.run_id == current_run or schema.PARENT_RUN in run.data.tags:
            continue
        if (exclude_tags and _has_tags(run, exclude_tags)) or run.data.tags.get(
            schema.TUNING_KEY
        ) != tuning_key:
            continue
        loss = run.data.metrics.get("best_loss")
        if loss is not None:
            return float(loss)
    return None
