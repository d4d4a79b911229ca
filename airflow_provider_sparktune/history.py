"""Trials of earlier runs, read back from MLflow: for resuming a retry and for a nightly warm start.

A trial run holds what is needed to rebuild its hyperopt trial: ``sparktune.vals`` (the values of the
active labels), ``sparktune.status``, the ``loss`` metric and its start and end times. Only trial runs
whose writing completed (status FINISHED or FAILED) are read; a run cut off mid-write, or a trial
cancelled by a kill, is run again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_sparktune.prior import PriorTrial

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
WARM_START_RUNS = 3  # the most recent successful runs of a tuning key that a warm start reads
_COMPLETE = {"FINISHED": "ok", "FAILED": "failed"}


@dataclass(frozen=True)
class EarlierTries:
    """Parent runs of earlier tries of one task instance and the trials they finished."""

    parent_run_ids: tuple[str, ...]
    still_running: tuple[str, ...]  # parents a killed try could not close
    trials: tuple[PriorTrial, ...]


@dataclass(frozen=True)
class WarmStartSource:
    """The best points of recent successful runs of a tuning key, best first."""

    parent_run_ids: tuple[str, ...]
    points: tuple[PriorTrial, ...]


def _search(client: Any, experiment_id: str, filter_string: str, **kwargs: Any) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=PAGE_SIZE, page_token=token, **kwargs
        )
        yield from page
        token = page.token
        if not token:
            return


def _tag_filter(**tags: str) -> str:
    """``tags.`a.b` = 'v'`` clauses; values with a quote are refused, not escaped."""
    clauses = []
    for key, value in tags.items():
        if "'" in value or "\\" in value:
            raise ValueError(f"{key}: {value!r} holds a quote or backslash")
        clauses.append(f"tags.`{key.replace('__', '.')}` = '{value}'")
    return " and ".join(clauses)


def earlier_tries(
    client: Any, experiment_id: str, *, dag_id: str, task_id: str, run_id: str, current_parent: str
) -> EarlierTries:
    """Every earlier try of (dag_id, task_id, run_id) in the experiment and its finished trials."""
    tags = {"airflow__dag_id": dag_id, "airflow__task_id": task_id}
    if "'" not in run_id and "\\" not in run_id:
        tags["airflow__run_id"] = run_id  # else filtered below: a quote cannot go into the search
    query = _tag_filter(**tags)
    parents = [
        run
        for run in _search(client, experiment_id, query)
        if run.info.run_id != current_parent
        and run.data.tags.get("airflow.run_id") == run_id
        and "mlflow.parentRunId" not in run.data.tags
    ]
    parents.sort(key=lambda run: run.info.start_time or 0)
    trials = [trial for parent in parents for trial in trials_of(client, experiment_id, parent.info.run_id)]
    return EarlierTries(
        parent_run_ids=tuple(p.info.run_id for p in parents),
        still_running=tuple(p.info.run_id for p in parents if p.info.status == "RUNNING"),
        trials=tuple(trials),
    )


def trials_of(client: Any, experiment_id: str, parent_run_id: str) -> list[PriorTrial]:
    """The completely written trial runs of one parent run, one per trial id, in trial id order."""
    by_tid: dict[int, PriorTrial] = {}
    query = _tag_filter(mlflow__parentRunId=parent_run_id)
    for run in _search(client, experiment_id, query):
        trial = _prior_trial(run)
        if trial is None:
            continue
        tid = int(run.data.tags.get("sparktune.tid", -1))
        by_tid.setdefault(tid, trial)  # a write retried after a lost reply may have made two runs
    return [by_tid[tid] for tid in sorted(by_tid)]


def _prior_trial(run: Any) -> PriorTrial | None:
    tags, status = run.data.tags, _COMPLETE.get(run.info.status)
    if status is None or tags.get("sparktune.status") not in ("ok", "failed"):
        return None
    try:
        vals = json.loads(tags.get("sparktune.vals", ""))
    except json.JSONDecodeError:
        log.warning(
            "trial run %s: sparktune.vals is not JSON (truncated?); it will run again", run.info.run_id
        )
        return None
    loss = run.data.metrics.get("loss")
    if not isinstance(vals, dict) or (tags["sparktune.status"] == "ok" and loss is None):
        return None
    metrics = {k: float(v) for k, v in run.data.metrics.items() if k != "loss"}
    return PriorTrial(
        vals=vals,
        status="ok" if tags["sparktune.status"] == "ok" else "failed",
        loss=None if loss is None else float(loss),
        source_run_id=run.info.run_id,
        metrics=metrics,
        error=tags.get("sparktune.error"),
        started_at=None if run.info.start_time is None else run.info.start_time / 1000,
        finished_at=None if run.info.end_time is None else run.info.end_time / 1000,
    )


def warm_start_source(
    client: Any,
    experiment_id: str,
    *,
    tuning_key: str,
    k: int,
    exclude_airflow_run_id: str,
    runs: int = WARM_START_RUNS,
) -> WarmStartSource:
    """The ``k`` best distinct points of the ``runs`` most recent FINISHED runs of ``tuning_key``."""
    query = _tag_filter(sparktune__tuning_key=tuning_key) + " and attributes.status = 'FINISHED'"
    parents = []
    for run in _search(client, experiment_id, query, order_by=["attributes.start_time DESC"]):
        if (
            run.data.tags.get("airflow.run_id") == exclude_airflow_run_id
            or "mlflow.parentRunId" in run.data.tags
        ):
            continue
        parents.append(run)
        if len(parents) >= runs:
            break
    candidates = [
        trial
        for parent in parents
        for trial in trials_of(client, experiment_id, parent.info.run_id)
        if trial.status == "ok" and trial.loss is not None
    ]
    candidates.sort(key=lambda trial: trial.loss)  # type: ignore[arg-type, return-value]
    return WarmStartSource(tuple(p.info.run_id for p in parents), tuple(best_distinct(candidates, k)))


def best_distinct(trials: Sequence[PriorTrial], k: int) -> list[PriorTrial]:
    """The first ``k`` trials with distinct points (trials already sorted best first)."""
    seen: set[str] = set()
    chosen: list[PriorTrial] = []
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
