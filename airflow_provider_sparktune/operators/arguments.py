"""Operator arguments that arrive as rendered template text, checked and converted before any I/O.

Each check raises a ``TuningConfigError`` that starts with the argument's name and says what fits,
so a bad value from a template or run conf fails the task before MLflow or Spark is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_sparktune.exceptions import TuningConfigError
from airflow_provider_sparktune.values import positive_seconds

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_UNSET = ("", "none", "null")  # what a template renders for None


def is_unset(value: Any) -> bool:
    """None, or the text a template renders for it (``""``, ``"None"``, ``"null"``)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in _UNSET)


def coerce(name: str, value: Any, kind: Callable[[str], Any]) -> Any:
    """Rendered templates arrive as text: ``"50"`` -> 50, ``""``/``"None"`` -> None."""
    if not isinstance(value, str) or value == "auto":
        return value
    if is_unset(value):
        return None
    text = value.strip()
    try:
        return kind(text)
    except TuningConfigError:
        raise
    except ValueError:
        raise TuningConfigError(f"{name}: rendered to {value!r}, which is not a {kind.__name__}") from None


def flag(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """A bool, or the text a template renders for one."""
    if isinstance(value, bool) or (value is None and allow_none):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if allow_none and is_unset(text):
            return None
    raise TuningConfigError(f"{name}: {value!r} is not a boolean; use true or false")


def positive_number(name: str, value: Any, *, allow_none: bool = True) -> float | None:
    """Seconds, or the text a template renders for them (None where ``allow_none``)."""
    value = coerce(name, value, float)
    if value is None and allow_none:
        return None
    return positive_seconds(name, value)


def mapping(name: str, value: Any) -> dict[str, Any] | None:
    """A dict, or the JSON object text a template renders for one."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as err:
            raise TuningConfigError(
                f"{name}: rendered to text that is not a JSON object ({err.msg})"
            ) from None
        if value is None:
            return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TuningConfigError(f"{name}: {type(value).__name__} given; use a dict with string keys")
    return dict(value)


def name(field: str, value: Any, *, allow_none: bool = True) -> str | None:
    """An identifier-like string: a connection id, an experiment name, a tuning key."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TuningConfigError(f"{field}: {value!r} must be a non-empty string")
    return value
