"""One Spark line in the `pyspark` package: pyspark and pyspark-client checked from their metadata."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from importlib import metadata

import pytest

from airflow_provider_sparktune.exceptions import SparktuneError, SparkVersionError
from airflow_provider_sparktune.spark_version import (
    SUPPORTED_LINES,
    check_one_spark_line,
    installed,
    spark_line,
)


def distributions(**versions: str) -> Callable[[str], str]:
    """A metadata lookup that knows only these distributions (``pyspark_client`` is ``pyspark-client``)."""

    def lookup(name: str) -> str:
        key = name.replace("-", "_")
        if key not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[key]

    return lookup


@pytest.mark.unit
@pytest.mark.parametrize(
    ("full", "client"), [("4.2.1", "4.2.0"), ("4.0.0", "4.0.4"), ("4.1.0.dev1", "4.1.3"), ("4.2.0", "4.2.0")]
)
def test_patch_releases_of_one_line_go_together(full: str, client: str) -> None:
    check_one_spark_line(distributions(pyspark=full, pyspark_client=client))


@pytest.mark.unit
@pytest.mark.parametrize("versions", [{"pyspark": "3.5.2"}, {"pyspark_client": "4.2.0"}, {}])
def test_either_one_alone_is_fine(versions: dict[str, str]) -> None:
    check_one_spark_line(distributions(**versions))


@pytest.mark.unit
def test_a_mixed_install_names_both_versions_and_the_fix() -> None:
    with pytest.raises(SparkVersionError) as caught:
        check_one_spark_line(distributions(pyspark="4.3.0", pyspark_client="4.2.0"))
    message = str(caught.value)
    assert isinstance(caught.value, SparktuneError)
    assert message.startswith("pyspark 4.3.0 and pyspark-client 4.2.0 are installed")
    assert "pip install 'pyspark==4.3.*' 'pyspark-client==4.3.*'" in message
    assert (
        "while no pyspark-client 4.3 exists, pyspark of the client's line (pip install 'pyspark==4.2.*')"
        in message
    )


@pytest.mark.unit
def test_an_older_pyspark_under_a_newer_client_is_refused() -> None:
    with pytest.raises(SparkVersionError, match=r"^pyspark 4\.0\.0 and pyspark-client 4\.2\.0 are installed"):
        check_one_spark_line(distributions(pyspark="4.0.0", pyspark_client="4.2.0"))


@pytest.mark.unit
def test_lines_and_lookups() -> None:
    assert spark_line("4.2.1") == (4, 2) and spark_line("4.10.0rc1") == (4, 10) and spark_line("dev") is None
    assert installed("pyspark", distributions(pyspark="4.1.1")) == "4.1.1"
    assert installed("pyspark-client", distributions(pyspark="4.1.1")) is None
    assert SUPPORTED_LINES == ((4, 0), (4, 1), (4, 2))


@pytest.mark.unit
def test_this_environment_is_on_one_supported_line() -> None:
    """What `make test-matrix` runs in each of its environments: the suite's pyspark is a supported one."""
    full, client = metadata.version("pyspark"), metadata.version("pyspark-client")
    assert spark_line(full) == spark_line(client) and spark_line(full) in SUPPORTED_LINES


@pytest.mark.unit
def test_the_check_runs_when_the_spark_code_is_imported() -> None:
    """Importing the Spark-using modules runs the check (here against a faked mixed install)."""
    script = (
        "from importlib import metadata\n"
        "real = metadata.version\n"
        "metadata.version = lambda name: '4.3.0' if name == 'pyspark' else real(name)\n"
        "import airflow_provider_sparktune.tuning.dispatch.launch\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "SparkVersionError: pyspark 4.3.0 and pyspark-client" in done.stderr
