"""Byte counts as people write them (``"512MiB"``, ``"2 GiB"``) and as the logs show them."""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_sparktune.exceptions import StagingError

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def format_bytes(size: float) -> str:
    """``2147483648`` -> ``"2.0 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def parse_bytes(value: Any, field: str = "broadcast_threshold_bytes") -> int:
    """A byte count from a number or rendered text: ``2147483648``, ``"512MiB"``, ``"2 GiB"``, ``"1.5GB"``."""
    if isinstance(value, bool):
        raise StagingError(f"{field}: {value!r} is not a number of bytes")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise StagingError(
                f"{field}: {value!r} is not a number of bytes; write e.g. 2147483648, '512MiB' or '2GiB'"
            )
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if number != number or number < 0:
        raise StagingError(f"{field}: {value!r} must be zero or a positive number of bytes")
    return int(number)
