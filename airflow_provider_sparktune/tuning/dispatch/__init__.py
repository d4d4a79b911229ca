"""How trials reach Spark: one :class:`Dispatcher` interface, two ways behind it."""

from __future__ import annotations

from airflow_provider_sparktune.tuning.dispatch.base import Dispatcher, DispatchPlan


def make_dispatcher(plan: DispatchPlan) -> Dispatcher:
    """The dispatcher ``plan.spec.dispatcher`` names."""
    from airflow_provider_sparktune.session_kind import is_connect
    from airflow_provider_sparktune.tuning.dispatch.launch import refuse_sparktrials_on_connect

    if is_connect(plan.spark):
        refuse_sparktrials_on_connect(plan.spec.dispatcher)
    if plan.spec.dispatcher == "sparktrials":
        from airflow_provider_sparktune.tuning.dispatch.sparktrials import SparkTrialsDispatcher

        return SparkTrialsDispatcher(plan)
    from airflow_provider_sparktune.tuning.dispatch.resident import ResidentDispatcher

    return ResidentDispatcher(plan)


__all__ = ["DispatchPlan", "Dispatcher", "make_dispatcher"]
