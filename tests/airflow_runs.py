"""Real Airflow DAG runs for operator tests: no hand-made task instance or DAG run stands in.

``dag.test()`` always creates a manual run. A scheduled run is created the way the scheduler
creates one (``create_dagrun`` on the serialized DAG with run type ``scheduled``) and its task is
run by ``airflow tasks test DAG TASK RUN_ID`` in this process, which runs the stored task instance
of that DAG run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def scheduled_dag_run(dag_id: str, logical_date: datetime, conf: dict[str, Any] | None = None) -> str:
    """Create a DAG run of run type ``scheduled`` for a DAG already written to the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    with create_session() as session:
        dag = SerializedDagModel.get_dag(dag_id, session=session)
        assert dag is not None, f"{dag_id} is not in the metadata DB"
        interval = dag.timetable.infer_manual_data_interval(run_after=logical_date)
        run_id = DagRun.generate_run_id(
            run_type=DagRunType.SCHEDULED, logical_date=logical_date, run_after=logical_date
        )
        run = dag.create_dagrun(
            run_id=run_id,
            logical_date=logical_date,
            data_interval=interval,
            run_after=logical_date,
            conf=conf,
            run_type=DagRunType.SCHEDULED,
            state=DagRunState.RUNNING,
            triggered_by=DagRunTriggeredByType.TIMETABLE,
            start_date=logical_date,
            session=session,
        )
        assert run.run_type == DagRunType.SCHEDULED
        return run_id


def tasks_test(dag_id: str, task_id: str, run_id: str) -> str:
    """``airflow tasks test DAG TASK RUN_ID`` in this process; returns the task instance's state."""
    from airflow.cli.cli_parser import get_parser
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    args = get_parser().parse_args(["tasks", "test", dag_id, task_id, run_id])
    args.func(args)
    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id, TaskInstance.run_id == run_id
            )
        )
        assert ti is not None
        return str(ti.state)
