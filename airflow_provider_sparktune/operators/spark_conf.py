"""Which Spark conf a rendered template (run conf, params, XCom, mapped values) may set: an allow-list.

Airflow trusts DAG authors, not everyone who may trigger a DAG with conf. ``spark_conf`` is
templated, so a DAG that fills it from ``params`` would otherwise let a conf user load jars,
listeners or plugins into the driver JVM (the Airflow worker), change the Python that runs, or
point ``spark.master`` at a cluster of their own. So an entry that came out of a template may set
only the keys listed in ``TEMPLATABLE_SPARK_CONF`` (resources, shuffle and SQL tuning, timeouts),
each to a value of its kind (a count, a size, a duration, a boolean, a fraction), plus the keys the
DAG author names in ``allowed_templated_spark_conf``. Everything else is refused: an allow-list,
because a deny-list is one forgotten key from a hole.

Every key, written or templated, must also look like a Spark conf key, and no value may hold a
line break or NUL: pyspark hands each entry to spark-submit as ``--conf key=value`` and Spark's
launcher splits at the first ``=``, so a key holding ``=`` would set another key (JVM options).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_sparktune.exceptions import TuningConfigError

# What a value of each kind looks like, its name, what it is when the name does not say, and an
# example. Digits, units and true/false only: no value of these kinds can carry a path, a host, a
# class or an option.
_UNITS = "a whole number with an optional unit"
VALUE_KINDS: dict[str, tuple[re.Pattern[str], str, str, str]] = {
    "count": (re.compile(r"[0-9]{1,9}"), "a whole number", "", "4"),
    "size": (
        re.compile(r"[0-9]{1,15}(?:b|[kmgtp]b?)?", re.IGNORECASE),
        "a size",
        f"{_UNITS} b, k, m, g, t or p",
        "4g",
    ),
    "size_or_off": (
        re.compile(r"-1|[0-9]{1,15}(?:b|[kmgtp]b?)?", re.IGNORECASE),
        "a size or -1",
        f"{_UNITS} b, k, m, g, t or p; -1 turns it off",
        "10m",
    ),
    "duration": (
        re.compile(r"[0-9]{1,15}(?:us|ms|s|m|min|h|d)?", re.IGNORECASE),
        "a duration",
        f"{_UNITS} us, ms, s, m, min, h or d",
        "120s",
    ),
    "boolean": (re.compile(r"true|false", re.IGNORECASE), "true or false", "", "true"),
    "fraction": (
        re.compile(r"0(?:\.[0-9]{1,9})?|1(?:\.0{1,9})?|\.[0-9]{1,9}"),
        "a fraction",
        "a decimal number from 0 to 1",
        "0.6",
    ),
    "number": (re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?"), "a decimal number", "", "5.0"),
}

# The Spark conf a template may set: (exact key, kind of value, why it is data). Exact keys only, no
# globs: a pattern could match a key added to Spark later that loads code or names a host. Names and
# kinds from Spark's "Spark Configuration" and "Performance Tuning" pages (Spark 4.x).
TEMPLATABLE_SPARK_CONF: tuple[tuple[str, str, str], ...] = (
    # resources: how much of the cluster the job asks for; the cluster manager caps each
    ("spark.executor.memory", "size", "heap of each executor: a resource amount"),
    ("spark.executor.memoryOverhead", "size", "non-heap memory of each executor: a resource amount"),
    ("spark.executor.memoryOverheadFactor", "fraction", "non-heap memory as a share of the heap"),
    ("spark.executor.pyspark.memory", "size", "memory limit of each executor's Python workers (the trials)"),
    ("spark.executor.cores", "count", "cores of each executor: a resource amount"),
    ("spark.executor.instances", "count", "how many executors: a resource amount"),
    ("spark.driver.memory", "size", "heap of the driver JVM (on the Airflow worker): a resource amount"),
    ("spark.driver.memoryOverhead", "size", "non-heap memory of the driver: a resource amount"),
    ("spark.driver.cores", "count", "cores of the driver: a resource amount"),
    ("spark.driver.maxResultSize", "size", "cap on the results collected to the driver"),
    ("spark.task.cpus", "count", "cores each trial task holds, so multithreaded models do not oversubscribe"),
    ("spark.cores.max", "count", "cap on the cores the job takes from a standalone cluster"),
    # dynamic allocation: how many executors, and how fast they come and go
    ("spark.dynamicAllocation.enabled", "boolean", "scales executors with the backlog of trials"),
    ("spark.dynamicAllocation.minExecutors", "count", "lower bound of the executors"),
    ("spark.dynamicAllocation.maxExecutors", "count", "upper bound of the executors"),
    ("spark.dynamicAllocation.initialExecutors", "count", "executors at the start"),
    ("spark.dynamicAllocation.executorIdleTimeout", "duration", "when an idle executor is released"),
    (
        "spark.dynamicAllocation.cachedExecutorIdleTimeout",
        "duration",
        "when an idle executor with cached data is released",
    ),
    ("spark.dynamicAllocation.schedulerBacklogTimeout", "duration", "how soon executors are asked for"),
    (
        "spark.dynamicAllocation.sustainedSchedulerBacklogTimeout",
        "duration",
        "how soon more executors are asked for",
    ),
    (
        "spark.dynamicAllocation.executorAllocationRatio",
        "fraction",
        "share of the wanted executors asked for",
    ),
    (
        "spark.dynamicAllocation.shuffleTracking.enabled",
        "boolean",
        "dynamic allocation without a shuffle service",
    ),
    (
        "spark.dynamicAllocation.shuffleTracking.timeout",
        "duration",
        "how long shuffle data keeps an executor",
    ),
    (
        "spark.scheduler.minRegisteredResourcesRatio",
        "fraction",
        "share of executors registered before jobs start",
    ),
    ("spark.scheduler.maxRegisteredResourcesWaitingTime", "duration", "how long jobs wait for that share"),
    # memory within each JVM and Python worker
    ("spark.memory.fraction", "fraction", "share of the heap for execution and storage"),
    ("spark.memory.storageFraction", "fraction", "share of that memory kept for storage"),
    ("spark.memory.offHeap.enabled", "boolean", "off-heap memory for execution and storage"),
    ("spark.memory.offHeap.size", "size", "amount of that off-heap memory"),
    ("spark.python.worker.memory", "size", "memory a Python worker aggregates in before spilling"),
    ("spark.python.worker.reuse", "boolean", "whether Python workers are reused between tasks"),
    # parallelism, shuffle and SQL tuning: how the data is split, joined and moved
    ("spark.default.parallelism", "count", "default partitions of RDD operations"),
    ("spark.sql.shuffle.partitions", "count", "partitions of SQL shuffles"),
    ("spark.sql.files.maxPartitionBytes", "size", "bytes per partition when files are read"),
    ("spark.sql.files.openCostInBytes", "size", "estimated cost of opening a file, for packing partitions"),
    ("spark.sql.autoBroadcastJoinThreshold", "size_or_off", "largest table a join broadcasts (-1: none)"),
    ("spark.sql.broadcastTimeout", "duration", "how long a broadcast join waits"),
    ("spark.sql.adaptive.enabled", "boolean", "adaptive query execution"),
    ("spark.sql.adaptive.coalescePartitions.enabled", "boolean", "merging small shuffle partitions"),
    ("spark.sql.adaptive.coalescePartitions.minPartitionSize", "size", "smallest merged partition"),
    ("spark.sql.adaptive.advisoryPartitionSizeInBytes", "size", "target size of adaptive partitions"),
    ("spark.sql.adaptive.skewJoin.enabled", "boolean", "splitting skewed join partitions"),
    (
        "spark.sql.adaptive.skewJoin.skewedPartitionFactor",
        "number",
        "how much larger than the median is skewed",
    ),
    ("spark.sql.adaptive.skewJoin.skewedPartitionThresholdInBytes", "size", "smallest skewed partition"),
    ("spark.sql.inMemoryColumnarStorage.batchSize", "count", "rows per batch of cached data"),
    ("spark.sql.inMemoryColumnarStorage.compressed", "boolean", "compression of cached data"),
    ("spark.sql.execution.arrow.pyspark.enabled", "boolean", "Arrow for pandas conversions"),
    (
        "spark.sql.execution.arrow.pyspark.fallback.enabled",
        "boolean",
        "falling back when Arrow cannot convert",
    ),
    ("spark.sql.execution.arrow.maxRecordsPerBatch", "count", "rows per Arrow batch sent to Python"),
    ("spark.shuffle.compress", "boolean", "compression of shuffle output (the codec stays the DAG's)"),
    ("spark.shuffle.spill.compress", "boolean", "compression of spilled data (the codec stays the DAG's)"),
    ("spark.shuffle.file.buffer", "size", "buffer of each shuffle file writer"),
    ("spark.reducer.maxSizeInFlight", "size", "shuffle data fetched at once by each reducer"),
    ("spark.shuffle.io.maxRetries", "count", "retries of a failed shuffle fetch"),
    ("spark.shuffle.io.retryWait", "duration", "wait between those retries"),
    ("spark.broadcast.blockSize", "size", "block size of broadcasts (the staged data, when broadcast)"),
    ("spark.rdd.compress", "boolean", "compression of serialized cached partitions"),
    # timeouts and retries: how long to wait and how often to try again
    ("spark.network.timeout", "duration", "default timeout of all network interactions"),
    ("spark.executor.heartbeatInterval", "duration", "how often executors report to the driver"),
    ("spark.rpc.askTimeout", "duration", "how long an RPC waits for its answer"),
    ("spark.rpc.lookupTimeout", "duration", "how long an RPC waits to find its endpoint"),
    ("spark.task.maxFailures", "count", "attempts of a task before its job fails"),
    ("spark.stage.maxConsecutiveAttempts", "count", "attempts of a stage before it is aborted"),
    ("spark.locality.wait", "duration", "how long a task waits for a data-local slot"),
    ("spark.locality.wait.node", "duration", "the same, for a node-local slot"),
    ("spark.locality.wait.process", "duration", "the same, for a process-local slot"),
    ("spark.locality.wait.rack", "duration", "the same, for a rack-local slot"),
)
_KIND_OF: dict[str, str] = {key: kind for key, kind, _ in TEMPLATABLE_SPARK_CONF}

# Dot-separated names; after the first, '*' (spark.metrics.conf.*.sink...) and '/' (Kubernetes
# label and annotation names such as app.kubernetes.io/name) occur in real keys too.
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_*/-]+)*")
_KEY_FIX = (
    "a Spark conf key is names of letters, digits, '_' and '-' joined by dots, such as "
    "'spark.executor.memory': write the key alone, and what it is set to as the entry's value"
)
# C0 controls but tab, DEL, C1 controls (NEL) and Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL"}
_JINJA = ("{{", "{%", "{#")
_TEMPLATED = "came from a rendered template (run conf, params, XCom or mapped values)"


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a Spark conf key, or None when it is one."""
    if _KEY.fullmatch(key):
        return None
    if not key:
        return "is empty"
    if "=" in key:
        head = key.split("=", 1)[0]
        return (
            "contains '=': pyspark passes '--conf key=value' to spark-submit, whose launcher splits at "
            f"the first '=', so the entry would set {head!r} to the rest"
        )
    if (found := _CONTROL.search(key)) is not None:
        return f"contains {_CONTROL_NAMES.get(found.group(), 'a control character')}"
    if any(ch.isspace() for ch in key):
        return "contains whitespace"
    if any(ch in "'\"`" for ch in key):
        return "contains a quote"
    if key.startswith(".") or key.endswith(".") or ".." in key:
        return "has an empty name between dots"
    bad = next((ch for ch in key if not re.fullmatch(r"[A-Za-z0-9_*/.-]", ch)), key[0])
    return f"contains {bad!r}, which no Spark conf key has"


def value_problem(value: str) -> str | None:
    """Why a Spark conf value cannot be passed on, or None: a line break or NUL would cut the option."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"contains {_CONTROL_NAMES.get(found.group(), 'a control character')}"


def check_conf_syntax(
    conf: Mapping[Any, Any], field: str = "spark_conf", error: type[Exception] = TuningConfigError
) -> None:
    """Refuse a key that is not a Spark conf key, or a value with a line break or NUL, written or not.

    The value is never quoted: it may be a secret.
    """
    for raw_key, raw_value in conf.items():
        key = str(raw_key)
        problem = key_problem(key)
        if problem is not None:
            raise error(f"{field}[{key!r}]: is not a Spark conf key: it {problem}; {_KEY_FIX}")
        problem = value_problem(str(raw_value))
        if problem is not None:
            raise error(
                f"{field}.{key}: the value {problem}, which would cut the option where Spark's launcher "
                "reads it; write the value on one line, without control characters"
            )


def as_written(value: Any) -> dict[str, str]:
    """The keys and values the DAG file writes out: a dict, or JSON text without template markers.

    A value holding a template marker, or that is not plain text, a number or a boolean (an
    ``XComArg``), is rendered at run time and so not the DAG author's.
    """
    if isinstance(value, str):
        if any(marker in value for marker in _JINJA):
            return {}
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    return {
        str(k): str(v)
        for k, v in value.items()
        if isinstance(v, (str, int, float, bool)) and not any(m in str(v) for m in _JINJA)
    }


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


def template_problem(key: str, value: str, allowed: Sequence[str] = ()) -> str | None:
    """Why a template may not set ``key`` to ``value``, or None when the allow-lists let it."""
    if any(fnmatch.fnmatchcase(key.lower(), pattern) for pattern in allowed):
        return None  # the DAG author's choice, any value
    kind = _KIND_OF.get(key)
    if kind is None:
        return "is not on the list of Spark conf keys a template may set"
    pattern, name, _, _ = VALUE_KINDS[kind]
    return None if pattern.fullmatch(value) else f"is not {name}"


def check_templated_conf(rendered: Mapping[str, Any] | None, written: Any, allowed: Any) -> None:
    """Refuse a Spark conf entry that came out of a template unless an allow-list lets it through.

    An entry came out of a template when the DAG file does not write that key with that value
    (``written`` is the argument as the DAG file passed it, before rendering; None for a mapped
    task's values). Every entry, written or not, must be a Spark conf key with a one-line value.
    """
    if not rendered:
        return
    check_conf_syntax(rendered)
    literal, allow = as_written(written), allowed_keys(allowed)
    refused: list[tuple[str, str]] = []
    for key, raw in rendered.items():
        value = str(raw)
        if key in literal and literal[key] == value:
            continue
        problem = template_problem(key, value, allow)
        if problem is not None:
            refused.append((key, problem))
    if not refused:
        return
    # Keys off the list first: they are what an attacker sends; a value of the wrong kind is a slip.
    refused.sort(key=lambda entry: entry[0] in _KIND_OF)
    key, problem = refused[0]
    others = f" (also refused: {', '.join(repr(k) for k, _ in refused[1:])})" if refused[1:] else ""
    if key in _KIND_OF:
        _, name, detail, example = VALUE_KINDS[_KIND_OF[key]]
        raise TuningConfigError(
            f"spark_conf.{key}: {_TEMPLATED} and {problem}; a template may set {key!r} only to {name}"
            f"{f' ({detail})' if detail else ''}, such as {example!r}: send such a value, or write "
            f"{key!r} with its value in the DAG file{others}"
        )
    raise TuningConfigError(
        f"spark_conf.{key}: {_TEMPLATED} and {problem}, which holds only data (resources, shuffle and "
        "SQL tuning, timeouts), never code, hosts or security settings; write "
        f"{key!r} with its value in the DAG file, or, if a run conf may choose it, add {key!r} to "
        f"allowed_templated_spark_conf{others}"
    )
