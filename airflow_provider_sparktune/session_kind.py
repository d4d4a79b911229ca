"""Which kind of SparkSession a run was given, for every layer that behaves differently over Connect."""

from __future__ import annotations

from typing import Any


def is_connect(spark: Any) -> bool:
    """A Spark Connect session (``sc://``): no SparkContext on this side, no broadcast variables."""
    return type(spark).__module__.startswith("pyspark.sql.connect")
