"""The Pareto front of a multi-objective run, and the rule that picks ``best_params`` on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from airflow_provider_sparktune.tuning.records import TrialRecord

R = TypeVar("R", bound=TrialRecord)


def signed(losses: Mapping[str, float], directions: Mapping[str, str]) -> tuple[float, ...]:
    """The losses in ``directions`` order, negated where maximized: lower is better in each."""
    return tuple(losses[n] if d == "minimize" else -losses[n] for n, d in directions.items())


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(records: Sequence[R], directions: Mapping[str, str]) -> tuple[R, ...]:
    """The ok trials that no other ok trial beats on every loss, best primary loss first.

    Sorted lexicographically, a point can only be dominated by one before it, and if anything
    dominates it a front member does: one pass against the front so far, O(n x front size).
    """
    scored = sorted(
        (
            (signed(r.losses, directions), r.tid, r)
            for r in records
            if r.status == "ok" and all(n in r.losses for n in directions)
        ),
        key=lambda item: (item[0], item[1]),
    )
    front: list[tuple[tuple[float, ...], R]] = []
    for point, _, record in scored:
        if not any(dominates(kept, point) for kept, _ in front):
            front.append((point, record))
    return tuple(record for _, record in front)


def best_on_front(front: Sequence[R]) -> R:
    """``best_params``' trial: the front member with the best primary (first) loss; a tie goes to the
    better next loss, then to the lower trial id.

    It is also the run's best ``loss``: a multi-objective trial's ``loss`` is its primary loss.
    """
    return front[0]
