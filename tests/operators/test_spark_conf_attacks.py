"""Issue 32's attacks on ``spark_conf``, as a user who may trigger DAGs with conf would make them.

End to end through ``dag.test()``: the ``=`` key that would start the driver JVM with the
attacker's options (run in a fresh process, where no SparkContext exists yet, so the JVM would
really start), and ``expand()`` laundering run conf into a mapped task's arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.operators.hyperopt_spark import HyperoptSparkOperator
from tests.spark_jobs import all_job_ids, jobs_started_since

TEST_DAGS = Path(__file__).resolve().parents[1] / "dags"
SPACE = {"x": {"hp": "uniform", "low": 0, "high": 1}}
TEMPLATED = "came from a rendered template (run conf, params, XCom or mapped values)"


def equals_key(marker: Path) -> str:
    """The issue's key: spark-submit splits '--conf key=1' at the first '=' and the driver JVM runs
    ``touch marker`` when its 8 MB heap runs out."""
    return f'spark.driver.extraJavaOptions=-XX:MaxHeapSize=8m -XX:OnOutOfMemoryError="touch {marker}" -Dx'


def x_loss(params: dict[str, Any], data: Any = None) -> float:
    return float(params["x"])


def task_context(map_index: int | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(try_number=1, pushed={}, map_index=map_index)
    ti.xcom_push = lambda key, value: ti.pushed.__setitem__(key, value)
    return {"ti": ti, "run_id": "manual__test"}


def mapped_task_states(dag_id: str, run_id: str) -> dict[int, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == "tune"
            )
        ).all()
        return {int(ti.map_index): str(ti.state) for ti in rows}


def run_log(run_id: str, captured: str) -> str:
    logs = Path(os.environ["AIRFLOW_HOME"], "logs")
    files = (
        [p for p in logs.rglob("*") if p.is_file() and f"run_id={run_id}" in str(p)] if logs.exists() else []
    )
    return "\n".join([captured, *(p.read_text(errors="replace") for p in files)])


# -- the '=' key -------------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_equals_key_is_refused_before_any_connection_is_read(tmp_path: Path) -> None:
    key = equals_key(tmp_path / "pwned")
    op = HyperoptSparkOperator(
        task_id="t",
        search_space=SPACE,
        objective=x_loss,
        spark_conf="{{ params.spark_conf | tojson }}",
        allowed_templated_spark_conf=["spark.*"],  # even a broad author allow-list does not let it in
        spark_conn_id="no_such_connection",
        mlflow_conn_id="no_such_connection",
    )
    op.spark_conf = json.dumps({key: "1"})  # as rendered from run conf
    with pytest.raises(TuningConfigError) as caught:
        op.execute(task_context())  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"spark_conf[{key!r}]: is not a Spark conf key: it contains '='")
    assert "spark_hook" not in op.__dict__ and "mlflow_hook" not in op.__dict__  # no connection was read


@pytest.mark.integration
def test_run_conf_with_an_equals_key_fails_the_task_and_runs_no_command(
    airflow_db: Any, mlflow_uri: str, tmp_path: Path
) -> None:
    """The issue's attack on the documented pattern, in a fresh process: there the driver JVM would
    start with the attacker's options (in this process a running SparkContext would be reused)."""
    marker = tmp_path / "pwned"
    run_conf = {"space": SPACE, "max_evals": 2, "spark_conf": {equals_key(marker): "1"}}
    script = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "dag = DagBag(dag_folder=sys.argv[1]).get_dag('templated_tuning')\n"
        "run = dag.test(run_conf=json.loads(sys.argv[2]))\n"
        "print('DAG_RUN', run.run_id, run.state)\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
    }
    env.pop("AIRFLOW_CONN_SPARK_DEFAULT", None)  # local Spark, started by this task's own JVM
    done = subprocess.run(
        [sys.executable, "-c", script, str(TEST_DAGS / "templated_tuning.py"), json.dumps(run_conf)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    states = [line.split() for line in done.stdout.splitlines() if line.startswith("DAG_RUN ")]
    assert states, output[-4000:]
    run_id, state = states[-1][1], states[-1][2]
    assert state == "failed", output[-4000:]
    log = run_log(run_id, output)
    assert "is not a Spark conf key: it contains '=': pyspark passes '--conf key=value'" in log
    assert "would set 'spark.driver.extraJavaOptions' to the rest" in log
    assert not marker.exists() and not (tmp_path / "pwned").exists()  # the command did not run


# -- expand() ----------------------------------------------------------------------------------------


def mapped_task(expand_over: str, **partial: Any) -> Any:
    """A mapped tuning task in a DAG, as a DAG file would build it: mapped over ``expand_over``."""
    from airflow.sdk import DAG

    with DAG("mapped_unit", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        values = {"spark_conf": [{}], "search_space": [SPACE]}
        HyperoptSparkOperator.partial(task_id="tune", objective=x_loss, max_evals=2, **partial).expand(
            **{expand_over: values[expand_over]}
        )
    return dag.task_dict["tune"]


@pytest.mark.unit
def test_a_mapped_tasks_spark_conf_is_checked_as_templated() -> None:
    """What ``unmap`` gives the operator's ``__init__`` was resolved from XCom, not written."""
    mapped = mapped_task("spark_conf", search_space=SPACE)
    attack = {"spark.jars": "/tmp/evil.jar", "spark.master": "spark://elsewhere:7077"}
    op = mapped.unmap({"spark_conf": dict(attack)})
    with pytest.raises(TuningConfigError) as caught:
        op._check_arguments(task_context(map_index=0))
    assert str(caught.value).startswith(f"spark_conf.spark.jars: {TEMPLATED} and is not on the list")
    assert str(caught.value).endswith("(also refused: 'spark.master')")
    # either sign of mapping is enough: how Airflow built it, or the task instance's map index
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.jars: "):
        op._check_arguments(task_context())
    written = HyperoptSparkOperator(task_id="plain", search_space=SPACE, objective=x_loss, spark_conf=attack)
    written._check_arguments(task_context())  # the DAG file wrote it: the author's
    with pytest.raises(TuningConfigError, match=r"^spark_conf\.spark\.jars: "):
        written._check_arguments(task_context(map_index=2))
    data = mapped.unmap({"spark_conf": {"spark.sql.shuffle.partitions": "3"}})
    data._check_arguments(task_context(map_index=0))  # data from the allow-list still passes


@pytest.mark.unit
def test_spark_conf_written_in_partial_stays_the_authors() -> None:
    mapped = mapped_task(
        "search_space", spark_conf={"spark.master": "local[1]", "spark.sql.session.timeZone": "UTC"}
    )
    op = mapped.unmap({"search_space": SPACE})
    op._check_arguments(task_context(map_index=0))


@pytest.mark.integration
def test_expand_cannot_launder_run_conf_into_written_spark_conf(
    spark: Any,
    airflow_db: Any,
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The issue's case: ``.partial(...).expand(spark_conf=confs())`` with confs a run conf chose.
    Map index 0 asks for data and runs; map index 1 asks for a jar and another master, and fails."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "conf_attack.py")).get_dag("mapped_conf_tuning")
    attack = {"spark.jars": "/tmp/evil.jar", "spark.master": "spark://127.0.0.1:9"}
    jobs_before = all_job_ids(spark)
    dag_run = dag.test(run_conf={"spark_confs": [{"spark.sql.shuffle.partitions": "3"}, attack]})
    states = mapped_task_states("mapped_conf_tuning", dag_run.run_id)
    assert states == {0: "success", 1: "failed"}, states
    output = run_log(dag_run.run_id, capfd.readouterr().out)
    assert f"spark_conf.spark.jars: {TEMPLATED} and is not on the list of Spark conf keys" in output
    assert "add 'spark.jars' to allowed_templated_spark_conf (also refused: 'spark.master')" in output
    assert jobs_started_since(spark, jobs_before)  # map index 0 ran its trials


# -- the Spark hook: what reaches spark-submit from its argument or from a connection ------------------


@pytest.mark.unit
def test_the_spark_hook_refuses_the_equals_key_from_its_argument_and_from_a_connection_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both reach spark-submit as '--conf key=value', so both are checked before a JVM starts."""
    from airflow_provider_sparktune.exceptions import SparkConnectionError
    from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook

    key = equals_key(tmp_path / "pwned")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_ATTACKED", json.dumps({"conn_type": "spark", "host": "local[1]"}))
    with pytest.raises(SparkConnectionError) as caught:
        SparkSessionHook("spark_attacked", spark_conf={key: "1"}).resolve()
    assert str(caught.value).startswith(f"spark_conf[{key!r}]: is not a Spark conf key: it contains '='")
    extra = {"spark_conf": {"spark.executor.memory": "1g\n-Dx=1"}}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_ATTACKED", json.dumps({"conn_type": "spark", "host": "local[1]", "extra": extra})
    )
    with pytest.raises(SparkConnectionError) as caught:
        SparkSessionHook("spark_attacked").resolve()
    assert str(caught.value) == (
        "spark_conn_id 'spark_attacked': extra.spark.executor.memory: the value contains a newline, which "
        "would cut the option where Spark's launcher reads it; write the value on one line, without "
        "control characters"
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_ATTACKED",
        json.dumps({"conn_type": "spark", "host": "local[1]", "extra": {key: "1"}}),
    )
    with pytest.raises(SparkConnectionError, match=r"^spark_conn_id 'spark_attacked': extra\["):
        SparkSessionHook("spark_attacked").resolve()


@pytest.mark.integration
def test_mapped_instances_run_their_own_trials_and_resume_none_of_their_siblings(
    spark: Any, airflow_db: Any, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each mapped instance is a task try of its own in MLflow: tagged with its map index, it runs its
    own ``max_evals`` trials instead of taking a sibling's finished trials as its earlier try's."""
    from airflow.dag_processing.dagbag import DagBag
    from mlflow.tracking import MlflowClient

    from airflow_provider_sparktune.tracking import schema

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": mlflow_uri}))
    dag = DagBag(dag_folder=str(TEST_DAGS / "conf_attack.py")).get_dag("mapped_conf_tuning")
    confs = [{"spark.sql.shuffle.partitions": "3"}, {"spark.sql.shuffle.partitions": "4"}]
    dag_run = dag.test(run_conf={"spark_confs": confs})
    assert mapped_task_states("mapped_conf_tuning", dag_run.run_id) == {0: "success", 1: "success"}
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("mapped_conf_tuning.tune")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{schema.AIRFLOW_RUN_ID}` = '{dag_run.run_id}'"
    )
    parents = [r for r in runs if schema.PARENT_RUN not in r.data.tags]
    assert sorted(r.data.tags.get(schema.AIRFLOW_MAP_INDEX) for r in parents) == ["0", "1"]
    for parent in parents:
        assert schema.RESUMED_TRIALS not in parent.data.tags, parent.data.tags
        children = client.search_runs(
            [experiment.experiment_id], f"tags.`{schema.PARENT_RUN}` = '{parent.info.run_id}'"
        )
        assert sorted(c.data.tags.get(schema.ORIGIN) for c in children) == ["new", "new"]
