"""Which Spark lines the provider supports, and the refusal of an install that mixes two of them.

``pyspark`` and ``pyspark-client`` (a dependency of the Spark provider) install files into the same
``pyspark/`` package. On two different lines the package is mixed: ``pyspark.__version__`` says one
version, the jars are another's, and Spark SQL UDFs fail. The installed distributions' metadata is
what tells: the package itself cannot.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import metadata

from airflow_provider_sparktune.exceptions import SparkVersionError

# (major, minor) lines on which pyspark and pyspark-client both exist and this provider is tested
# (make test-matrix); pyproject.toml's ranges say the same.
SUPPORTED_LINES = ((4, 0), (4, 1), (4, 2))
_LINE = re.compile(r"^(\d+)\.(\d+)")

Lookup = Callable[[str], str]


def spark_line(version: str) -> tuple[int, int] | None:
    """``(4, 2)`` of ``"4.2.1"``; None for a version text that does not start with major.minor."""
    match = _LINE.match(version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def installed(name: str, lookup: Lookup = metadata.version) -> str | None:
    """The installed version of distribution ``name``, None when it is not installed."""
    try:
        return lookup(name)
    except metadata.PackageNotFoundError:
        return None


def check_one_spark_line(lookup: Lookup = metadata.version) -> None:
    """Refuse an environment whose pyspark and pyspark-client are on different minor lines.

    Either one alone is fine (an executor image may have only pyspark), and so are two patch
    releases of one line (pyspark 4.2.1 beside pyspark-client 4.2.0).
    """
    full, client = installed("pyspark", lookup), installed("pyspark-client", lookup)
    if full is None or client is None or spark_line(full) == spark_line(client):
        return
    line = spark_line(full)
    line_text = f"{line[0]}.{line[1]}" if line else full
    client_line = spark_line(client)
    client_text = f"{client_line[0]}.{client_line[1]}" if client_line else client
    raise SparkVersionError(
        f"pyspark {full} and pyspark-client {client} are installed: both write the one `pyspark` package, "
        "and on different Spark lines it is mixed (its version says one, its jars are another's) and "
        f"Spark SQL UDFs fail; install pyspark-client of your Spark's line (pip install "
        f"'pyspark=={line_text}.*' 'pyspark-client=={line_text}.*'), or, while no pyspark-client {line_text} "
        f"exists, pyspark of the client's line (pip install 'pyspark=={client_text}.*')"
    )
