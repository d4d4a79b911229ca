"""Where the resident tasks start: a classic SparkContext job, or one Spark Connect query.

The resident dispatcher needs only "start n long-lived Python tasks that connect back to me, and
cancel them on demand". A classic SparkContext does that with a job group; Spark Connect, whose
client has no SparkContext, with one ``mapInPandas`` query that carries an operation tag.

Two Spark conf keys of the session tune the connect-back (set them in the connection's
``spark_conf``, or with ``spark.conf.set`` in a notebook):

* ``spark.sparktune.callbackHost``: the address executors reach this process at. Default: classic,
  ``spark.driver.host``; Spark Connect, the local address of this client's connection to the
  server (the address the server sees).
* ``spark.sparktune.callbackBindAddress``: the local address to listen on. Default: the callback
  host, which must then be an address of this machine; behind a NAT, set it (``0.0.0.0`` listens on
  every interface). A callback host that is not local and no bind address fail the run, saying so.
* ``spark.sparktune.callbackTimeout``: seconds to wait for the first task to connect back before
  the run fails with an error that says so (Spark Connect only; default 60).
"""

from __future__ import annotations

import logging
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from airflow_provider_sparktune.exceptions import SparkConnectionError, TuningConfigError
from airflow_provider_sparktune.session_kind import is_connect
from airflow_provider_sparktune.spark_version import check_one_spark_line
from airflow_provider_sparktune.values import DEFAULT_SPARK_WAIT_S, positive_seconds

# Every Spark-using module of the provider imports this one: a mixed pyspark install is refused here.
check_one_spark_line()

log = logging.getLogger(__name__)

CALLBACK_HOST_CONF = "spark.sparktune.callbackHost"
CALLBACK_BIND_CONF = "spark.sparktune.callbackBindAddress"
CALLBACK_TIMEOUT_CONF = "spark.sparktune.callbackTimeout"
_VERSION_MISMATCH = re.compile(r"different version:?\s*(\d+\.\d+)\s*than that in driver:?\s*(\d+\.\d+)")

Task = Callable[[Iterable[Any]], Iterator[int]]


def refuse_sparktrials_on_connect(dispatcher: str) -> None:
    """SparkTrials drives a classic SparkContext; over Spark Connect only the resident dispatcher runs."""
    if dispatcher == "sparktrials":
        raise TuningConfigError(
            "dispatcher: 'sparktrials' needs a classic SparkContext, which a Spark Connect session does "
            "not have; use dispatcher='resident' (the default), or a classic spark connection"
        )


@dataclass(frozen=True)
class Callback:
    """How the resident tasks reach this process."""

    host: str  # the address executors connect to
    bind: str | None  # the local address to listen on; None: the host (an address of this machine)
    timeout: float | None  # how long to wait for the first task; None: as long as the job runs


class TaskLauncher(ABC):
    """Starts ``n`` resident tasks as one unit of Spark work, and cancels it."""

    def __init__(self, spark: Any, group: str) -> None:
        self.spark, self.group = spark, group

    @abstractmethod
    def task_slots(self) -> int:
        """How many tasks the cluster runs at once (what ``parallelism="auto"`` is capped by)."""

    @abstractmethod
    def callback(self) -> Callback:
        """Where and how long the resident tasks connect back, from the session's conf (one read)."""

    @abstractmethod
    def run_tasks(self, task: Task, n: int) -> None:
        """Run ``task`` in ``n`` parallel Spark tasks until all return; raises what failed them."""

    @abstractmethod
    def cancel(self) -> None:
        """Cancel the running tasks; a failure is logged, never raised (a kill must go on)."""


class ClassicLauncher(TaskLauncher):
    """One SparkContext job in the run's job group."""

    def task_slots(self) -> int:
        return int(self.spark.sparkContext.defaultParallelism)

    def callback(self) -> Callback:
        conf = _set_values(dict(self.spark.sparkContext.getConf().getAll()))
        if CALLBACK_HOST_CONF in conf:
            host = conf[CALLBACK_HOST_CONF]
        elif conf.get("spark.master", "").startswith("local"):
            host = "127.0.0.1"
        else:
            host = conf.get("spark.driver.host", "127.0.0.1")
        return Callback(host, conf.get(CALLBACK_BIND_CONF), None)

    def run_tasks(self, task: Task, n: int) -> None:
        sc = self.spark.sparkContext
        with job_group(self.spark, self.group, "sparktune resident trial tasks"):
            sc.parallelize(range(n), n).mapPartitions(task).collect()

    def cancel(self) -> None:
        cancel_job_group(self.spark, self.group)


class ConnectLauncher(TaskLauncher):
    """One Spark Connect query of ``n`` partitions, tagged with the run's group so it can be interrupted."""

    def task_slots(self) -> int:
        """Partitions of a default-partitioned range: Spark's default parallelism, read with one small job."""

        def one_row(batches: Iterable[Any]) -> Iterator[Any]:
            import pandas as pd

            for _ in batches:
                pass
            yield pd.DataFrame({"n": [1]})

        return len(self.spark.range(0, 1 << 20).mapInPandas(one_row, "n long").collect())

    def callback(self) -> Callback:
        conf = _set_values(self.spark.conf.getAll)  # one request to the server
        host = conf.get(CALLBACK_HOST_CONF) or self._address_the_server_sees()
        return Callback(host, conf.get(CALLBACK_BIND_CONF), _seconds(conf.get(CALLBACK_TIMEOUT_CONF)))

    def _address_the_server_sees(self) -> str:
        """The local address of a connection to the server."""
        host, port = _server_endpoint(self.spark)
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                return str(sock.getsockname()[0])
        except OSError as err:
            raise SparkConnectionError(
                f"cannot reach the Spark Connect server at {host}:{port} to find this client's address "
                f"({err}); set {CALLBACK_HOST_CONF} to an address its executors can reach"
            ) from err

    def run_tasks(self, task: Task, n: int) -> None:
        def resident_partition(batches: Iterable[Any]) -> Iterator[Any]:
            import pandas as pd

            yield pd.DataFrame({"evaluated": list(task(batches))})

        self.spark.addTag(self.group)  # tags belong to this thread's operations only
        try:
            self.spark.range(0, n, 1, n).mapInPandas(resident_partition, "evaluated long").collect()
        except Exception as err:
            mismatch = _python_mismatch(err)
            if mismatch is not None:
                raise mismatch from err
            raise
        finally:
            self.spark.removeTag(self.group)

    def cancel(self) -> None:
        try:
            self.spark.interruptTag(self.group)
        except Exception:
            log.exception("interrupting the Spark Connect operations tagged %s failed", self.group)


def _set_values(conf: Any) -> dict[str, str]:
    """Conf entries with a non-blank value, stripped."""
    return {str(k): str(v).strip() for k, v in dict(conf).items() if v is not None and str(v).strip()}


def _seconds(text: str | None) -> float:
    if text is None:
        return DEFAULT_SPARK_WAIT_S
    return positive_seconds(CALLBACK_TIMEOUT_CONF, text, SparkConnectionError, text=True)


@contextmanager
def job_group(spark: Any, group: str, description: str) -> Iterator[None]:
    """Spark jobs started by this thread inside the block carry ``group`` and can be cancelled by it."""
    sc = spark.sparkContext
    sc.setLocalProperty("spark.jobGroup.id", group)
    sc.setLocalProperty("spark.job.description", description)
    sc.setLocalProperty("spark.job.interruptOnCancel", "true")
    try:
        yield
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            sc.setLocalProperty(key, None)


def cancel_job_group(spark: Any, group: str) -> None:
    """Cancel every Spark job of ``group``; a failure is logged, never raised (a kill must go on)."""
    try:
        spark.sparkContext.cancelJobGroup(group)
    except Exception:
        log.exception("cancelling Spark job group %s failed", group)


def launcher_for(spark: Any, group: str) -> TaskLauncher:
    return ConnectLauncher(spark, group) if is_connect(spark) else ClassicLauncher(spark, group)


def task_slots(spark: Any) -> int:
    return launcher_for(spark, "").task_slots()


def _server_endpoint(spark: Any) -> tuple[str, int]:
    """(host, port) this Connect client talks to, read from the client's channel (no public API has it)."""
    try:
        host, _, port = str(spark.client._builder.endpoint).rpartition(":")
        return host.strip("[]"), int(port)
    except (AttributeError, ValueError) as err:
        raise SparkConnectionError(
            f"{CALLBACK_HOST_CONF}: this pyspark's Spark Connect client does not tell its server's address "
            f"({err}); set {CALLBACK_HOST_CONF} to an address of this machine the server's executors can reach"
        ) from err


def _python_mismatch(err: BaseException) -> SparkConnectionError | None:
    """PySpark's worker refuses a client of another Python minor version: say which and how to fix it."""
    match = _VERSION_MISMATCH.search(str(err))
    if "PYTHON_VERSION_MISMATCH" not in str(err) or match is None:
        return None
    server, client = match.groups()
    return SparkConnectionError(
        f"the Spark Connect server runs Python {server} for its executors, this client runs Python {client}: "
        "the objective travels pickled (cloudpickle), which needs the same minor version on both sides; "
        f"run the server's executors on Python {client} (PYSPARK_PYTHON / spark.pyspark.python on the "
        f"server) or this task on Python {server}"
    )
