"""The driver JVM of a classic session, started so that it fits under Airflow's task supervisor.

Its output goes to Python logging at Spark's own levels (not to stderr, which the supervisor records
as errors), it runs in a session of its own (so a mark-failed SIGTERM to the task's process group
leaves the driver able to cancel the trials), and MLflow's credentials stay out of its environment.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_provider_sparktune.redaction import redact_uri
from airflow_provider_sparktune.tracking.tracker import CREDENTIAL_ENV

# Variables whose value is a URI that may carry credentials (``MLFLOW_TRACKING_URI`` with
# ``user:pass@``, a documented fallback): the JVM and its workers get them redacted.
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")

# Spark's console pattern: "26/12/01 15:04:05 WARN NativeCodeLoader: ..."
_JVM_LOG_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) ")
_JVM_LEVELS = {"WARN": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.ERROR}
# Lines that carry on the message above them: stack frames, causes, a Java exception's own line.
_JVM_CONTINUATION = re.compile(r"^(\s|Caused by:|[a-z][\w$]*(\.[\w$]+)+(:|$))")
jvm_log = logging.getLogger("airflow_provider_sparktune.spark_jvm")


def jvm_line_levels(lines: Iterable[str]) -> Iterable[tuple[int, str]]:
    """The log level of each line the driver JVM prints: Spark's own level, kept for its stack trace.

    Lines Spark prints without a level (JVM warnings, "Setting default log level") are start-up
    chatter and count as INFO.
    """
    level = logging.INFO
    for line in lines:
        match = _JVM_LOG_LINE.match(line)
        if match:
            level = _JVM_LEVELS.get(match.group(1), logging.INFO)
        elif not _JVM_CONTINUATION.match(line):
            level = logging.INFO
        yield level, line


class _WorkerPopenArgs(dict[str, Any]):
    """Popen arguments whose ``env`` leaves out MLflow's credentials.

    pyspark's ``launch_gateway`` sets ``env`` to a copy of ``os.environ`` itself; the driver JVM,
    its Python workers and so every objective inherit it. The task's MLflow token is exposed in
    ``os.environ`` while the run writes to MLflow (``MlflowHook.credentials``); objectives must not
    be able to read it, nor the ``user:pass@`` of a tracking URI (the address itself stays).
    """

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "env":
            value = worker_env(value)
        super().__setitem__(key, value)


def worker_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for the driver JVM: without MLflow's credential variables, its URIs redacted."""
    return {k: redact_uri(v) if k in URI_ENV else v for k, v in env.items() if k not in CREDENTIAL_ENV}


def gateway_launch_supported(context: Any, launch: Callable[..., Any]) -> bool:
    """Whether this pyspark lets the driver JVM be started here: its gateway slots on ``SparkContext``
    (private) and ``launch_gateway(popen_kwargs=...)``. Without them PySpark starts the JVM itself.
    """
    try:
        parameters = inspect.signature(launch).parameters
    except (TypeError, ValueError):
        return False
    return "popen_kwargs" in parameters and all(hasattr(context, a) for a in ("_lock", "_gateway", "_jvm"))


def launch_logged_gateway(conf: Mapping[str, str]) -> None:
    """Start the driver JVM with its output going to Python logging rather than the process's stderr.

    Under the Airflow task supervisor everything written to stderr is recorded as an error, so Spark's
    start-up lines would show red in every task log. The JVM also gets a session of its own: a task
    marked failed receives SIGTERM on its whole process group, and a driver that died with it could
    no longer cancel the trials or let the runs end KILLED. It still exits with the task, when its
    stdin closes. MLflow's credential variables stay out of its environment (``_WorkerPopenArgs``).
    pyspark reuses a gateway that already exists.
    """
    import subprocess

    from pyspark import SparkConf, SparkContext, __version__
    from pyspark.java_gateway import launch_gateway

    if not gateway_launch_supported(SparkContext, launch_gateway):
        jvm_log.warning(
            "pyspark %s starts the driver JVM itself: its output goes to this process's stderr", __version__
        )
        return
    with SparkContext._lock:
        if SparkContext._gateway is not None:
            return
        spark_conf = SparkConf(loadDefaults=False)
        for key, value in conf.items():
            spark_conf.set(key, value)
        popen = _WorkerPopenArgs(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        gateway = launch_gateway(spark_conf, popen_kwargs=popen)
        SparkContext._gateway = gateway
        SparkContext._jvm = gateway.jvm
    output = gateway.proc.stdout

    def forward() -> None:
        lines = (raw.decode("utf-8", errors="replace").rstrip() for raw in iter(output.readline, b""))
        for level, line in jvm_line_levels(lines):
            if line:
                jvm_log.log(level, "%s", line)

    threading.Thread(target=forward, name="sparktune-spark-output", daemon=True).start()
