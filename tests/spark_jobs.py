"""Every Spark job of the application, whatever its job group.

``statusTracker().getJobIdsForGroup()`` without an argument lists only the jobs outside any job
group, and every trial job runs in a ``sparktune-<uuid>`` group, so it cannot see a stray trial.
Spark's status store holds all jobs; the listener bus is drained first so a job that just started
is counted.
"""

from __future__ import annotations

from typing import Any


def all_job_ids(spark: Any) -> set[int]:
    """Ids of all jobs the application has started so far, in any job group."""
    jsc = spark.sparkContext._jsc.sc()
    jsc.listenerBus().waitUntilEmpty(30_000)
    jobs = jsc.statusStore().jobsList(None)
    return {int(jobs.apply(i).jobId()) for i in range(jobs.size())}


def jobs_started_since(spark: Any, before: set[int]) -> set[int]:
    """Jobs started after ``before`` was taken."""
    return {job for job in all_job_ids(spark) if job > max(before, default=-1)}
