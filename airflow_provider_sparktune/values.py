"""Plain-value rules and JSON conversion, below every layer: each rule here is written once.

The core's settings (``TuningSpec``, ``TrackingOptions``), the operator's argument conversion, the
Spark hook and the resident dispatcher's launcher all check their durations with
:func:`positive_seconds`, so a timeout means the same thing and is refused with the same words
wherever it is set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from airflow_provider_sparktune.exceptions import TuningConfigError

# How long to wait for Spark to give a run its executors: a cluster master's first executor, a Spark
# Connect server's answer, the resident tasks' first connection back to the driver.
DEFAULT_SPARK_WAIT_S = 60.0


def is_int(value: Any) -> bool:
    """An int that is not a bool (``True`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_seconds(
    field: str, value: Any, error: type[Exception] = TuningConfigError, *, text: bool = False
) -> float:
    """``value`` as seconds: a finite number above zero or, with ``text``, the text of one (a rendered
    template, a Spark conf value; the core API takes numbers only).

    ``error`` is the exception the caller's layer raises for its settings; the message names ``field``.
    """
    seconds = float("nan")
    if text and isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            pass
    elif is_number(value):
        seconds = float(value)
    if not 0 < seconds < math.inf:
        raise error(f"{field}: {value!r} must be a positive number of seconds")
    return seconds


def json_native(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats into plain JSON values."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):  # numpy.float64 is a float subclass: make it a plain float
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_native(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return json_native(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return json_native(tolist())
    return str(value)
