"""Which Spark conf a rendered template (run conf, params) may set: data, never code, hosts or security.

Airflow trusts DAG authors, not everyone who may trigger a DAG with conf. ``spark_conf`` is
templated, so a DAG that fills it from ``params`` would let a conf user load jars, listeners or
plugins into the driver JVM (the Airflow worker), change the Python that runs, or point
``spark.master`` at a cluster of their own (the objective, the data, the storage credentials and
the dispatcher key would go there). A key the DAG file writes out with its value is the DAG
author's; a key or value that came out of a template is refused when it can carry code, a host or
a security setting, unless the DAG author lists the key in ``allowed_templated_spark_conf``.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_sparktune.exceptions import TuningConfigError

# Keys that load code, choose what runs, move the job or its callbacks, or weaken Spark's security,
# as glob patterns over the lower-cased key. Spark's own docs ("Spark Configuration") name each.
CODE_OR_HOST_KEYS: tuple[tuple[str, str], ...] = (
    ("spark.master", "moves the job to another cluster"),
    ("spark.remote", "moves the job to another Spark Connect server"),
    ("spark.api.mode", "moves the job to another Spark Connect server"),
    ("spark.submit.*", "loads code (pyFiles) or moves the driver (deployMode)"),
    ("spark.jars*", "loads jars into the driver and executor JVMs"),
    ("spark.files", "ships files to every executor"),
    ("spark.archives", "ships archives to every executor"),
    ("spark.*.extraclasspath", "loads classes into a JVM"),
    ("spark.*.extralibrarypath", "loads native libraries into a JVM"),
    ("spark.*javaoptions", "sets JVM options (agents, system properties)"),
    ("*listeners", "loads listener classes into the driver JVM"),
    ("spark.plugins*", "loads plugin classes into the driver and executor JVMs"),
    ("spark.sql.extensions", "loads session extension classes"),
    ("spark.sql.catalog.*", "loads catalog classes"),
    ("spark.sql.hive.*", "loads metastore jars or reaches a metastore host"),
    ("spark.python.*.module", "chooses the Python module every worker starts from"),
    ("spark.pyspark.*", "chooses the Python executable that runs"),
    ("spark.executorenv.*", "sets the executors' environment (PYTHONPATH, LD_PRELOAD)"),
    ("spark.yarn.*", "ships files or chooses the cluster's resources"),
    ("spark.kubernetes.*", "chooses container images, pod templates and service accounts"),
    ("spark.hadoop.*", "names Hadoop classes, endpoints and credentials"),
    ("spark.driver.host", "moves where executors connect to the driver"),
    ("spark.driver.bindaddress", "moves where the driver listens"),
    ("spark.driver.port", "moves where the driver listens"),
    ("spark.sparktune.*", "moves where trial tasks connect back to this task"),
    ("spark.eventlog.*", "writes the job's events, conf and environment to another place"),
    ("spark.metrics.*", "loads metric sinks that send to another host"),
    ("spark.ui.filters", "loads servlet filter classes into the driver"),
    ("spark.authenticate*", "turns off or changes Spark's own authentication"),
    ("spark.network.crypto.*", "turns off or changes Spark's network encryption"),
    ("spark.io.encryption.*", "turns off or changes Spark's disk encryption"),
    ("spark.ssl*", "turns off or changes Spark's TLS"),
    ("spark.redaction.*", "stops secrets being hidden in the UI and event log"),
)
# A value naming a Java class (org.example.Listener), a URL, or a file to load: code or a host
# whatever key it is under (spark.serializer, spark.shuffle.manager, spark.sql.warehouse.dir, ...).
_CLASS_NAME = re.compile(r"(?:[A-Za-z_$][\w$]*\.)+[A-Z][\w$]*")
_URL = re.compile(r"[A-Za-z][\w+.-]*://")
_CODE_FILE = re.compile(r"\.(?:jar|py|pyc|zip|egg|whl|so|dylib|dll|class|sh)\b", re.IGNORECASE)
_JINJA = ("{{", "{%", "{#")


def why_refused(key: str, value: str) -> str | None:
    """Why a Spark conf key or value may not come from a template, or None when it is plain data."""
    lowered = key.strip().lower()
    for pattern, reason in CODE_OR_HOST_KEYS:
        if fnmatch.fnmatchcase(lowered, pattern):
            return reason
    if key != key.strip():
        return "has spaces around the key"
    if _URL.search(value):
        return "its value is a URL"
    if _CLASS_NAME.search(value):
        return "its value names a class"
    if _CODE_FILE.search(value):
        return "its value names a file of code"
    return None


def as_written(value: Any) -> dict[str, str]:
    """The keys and values the DAG file writes out: a dict, or JSON text without template markers."""
    if isinstance(value, str):
        if any(marker in value for marker in _JINJA):
            return {}
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def allowed_keys(value: Any) -> tuple[str, ...]:
    """``allowed_templated_spark_conf``: Spark conf keys (or glob patterns) a template may set."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(k, str) and k.strip() for k in value):
        raise TuningConfigError(
            f"allowed_templated_spark_conf: {value!r} is not a list of Spark conf keys; use e.g. "
            '["spark.executor.memory"] (glob patterns such as "spark.sql.shuffle.*" work too)'
        )
    return tuple(k.strip().lower() for k in value)


def check_templated_conf(rendered: Mapping[str, Any] | None, written: Any, allowed: Any) -> None:
    """Refuse a code-, host- or security-bearing Spark conf entry that came out of a template.

    An entry came out of a template when the DAG file does not write that key with that value
    (``written`` is the argument as the DAG file passed it, before rendering).
    """
    if not rendered:
        return
    literal, allow = as_written(written), allowed_keys(allowed)
    refused: list[tuple[str, str]] = []
    for key, raw in rendered.items():
        value = str(raw)
        if literal.get(key) == value:
            continue
        if any(fnmatch.fnmatchcase(key.strip().lower(), pattern) for pattern in allow):
            continue
        reason = why_refused(key, value)
        if reason is not None:
            refused.append((key, reason))
    if refused:
        key, reason = refused[0]
        others = f" (also refused: {', '.join(repr(k) for k, _ in refused[1:])})" if refused[1:] else ""
        raise TuningConfigError(
            f"spark_conf.{key}: came from a rendered template (run conf or params) and {reason}{others}; "
            f"a template may only set Spark conf that is data. Write {key!r} with its value in the "
            f"DAG file, or, if a run conf may choose it, add {key.strip()!r} to "
            "allowed_templated_spark_conf"
        )
