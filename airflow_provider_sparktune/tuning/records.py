"""What a run produces, in plain Python types: one record per finished trial, progress, the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_sparktune.values import json_native

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.spec import TuningSpec

StopReason = Literal["max_evals", "timeout", "loss_threshold", "early_stop"]
TrialStatus = Literal["ok", "failed", "cancelled", "pruned"]
TrialOrigin = Literal["new", "resumed", "warm_start"]


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial in plain Python types: what the task log, MLflow and XCom need."""

    tid: int
    status: TrialStatus
    loss: float | None
    params: dict[str, Any]
    vals: dict[str, Any]
    metrics: dict[str, float]
    error: str | None
    started_at: float | None
    finished_at: float | None
    eval_s: float | None = None  # time inside the objective, measured on the executor
    origin: TrialOrigin = "new"  # "resumed": finished by an earlier try; "warm_start": a best point re-run
    source_run_id: str | None = None  # the MLflow trial run a resumed or warm-start trial came from
    curve: tuple[tuple[int, float], ...] = ()  # (step, value) of every trial.report, the learning curve
    pruned_step: int | None = None  # the step a pruned trial stopped at
    losses: dict[str, float] = field(default_factory=dict)  # a multi-objective run: {loss name: value}

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return json_native(
            {
                "tid": self.tid,
                "status": self.status,
                "loss": self.loss,
                "params": self.params,
                "vals": self.vals,
                "metrics": self.metrics,
                "error": self.error,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "duration_s": self.duration_s,
                "eval_s": self.eval_s,
                "origin": self.origin,
                "source_run_id": self.source_run_id,
                "curve": [list(point) for point in self.curve],
                "pruned_step": self.pruned_step,
                **({"losses": self.losses} if self.losses else {}),
            }
        )


@dataclass(frozen=True)
class Progress:
    """Where the run stands when a trial finishes."""

    finished: int
    max_evals: int
    best_loss: float | None
    elapsed_s: float


@dataclass(frozen=True)
class TuningResult:
    best_params: dict[str, Any]
    best_loss: float
    argmin: dict[str, Any]
    trials_total: int
    trials_ok: int
    trials_failed: int
    trials_cancelled: int
    stopped_reason: StopReason
    duration_s: float
    efficiency: float  # time spent in objectives / (parallelism x wall time)
    trial_overhead_s: float  # idle slot time per finished trial
    spec: TuningSpec
    records: tuple[TrialRecord, ...]
    trials: Any = field(default=None, repr=False, compare=False)  # the SparkTrials object, for analysis
    trials_pruned: int = 0
    # trial attempts whose Spark task was lost and that ran again: the cluster's failures, not the
    # objective's, so not in trials_failed (a trial lost more often than lost_trial_retries is)
    trials_lost: int = 0
    startup_s: float | None = (
        None  # from the start of the run (of the task, under Airflow) to the first trial
    )
    drain_s: float | None = None  # from the last trial's result to the last MLflow write (tracked runs)
    # a multi-objective run: the ok trials no other ok trial beats on every loss, best primary first
    pareto_front: tuple[TrialRecord, ...] = ()


TrialCallback = Callable[[TrialRecord, Progress], None]


def efficiency(records: tuple[TrialRecord, ...], parallelism: int, wall_s: float) -> tuple[float, float]:
    """Busy share of the trial slots, and the idle slot time per finished trial."""
    ran = [r for r in records if r.started_at is not None]
    busy = sum((r.eval_s if r.eval_s is not None else r.duration_s or 0.0) for r in ran)
    capacity = parallelism * wall_s
    if not ran or capacity <= 0:
        return 0.0, 0.0
    return min(1.0, busy / capacity), max(0.0, capacity - busy) / len(ran)
