"""The worker daemon: zip directories re-read only when a zip on sys.path changed, and the fast start
only on the pyspark lines it is tested with."""

from __future__ import annotations

import importlib
import sys
import time
import zipfile
import zipimport
from pathlib import Path

import pytest

from airflow_provider_sparktune.tuning.dispatch import daemon

only_before_312 = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="Python 3.12 re-reads zips lazily itself"
)


def _zip(path: Path, modules: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in modules.items():
            archive.writestr(f"{name}.py", source)


@pytest.mark.unit
@only_before_312
def test_a_zip_on_the_path_is_re_read_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "code.zip"
    _zip(archive, {"zipped_one": "VALUE = 1\n"})
    monkeypatch.syspath_prepend(str(archive))
    monkeypatch.setattr(zipimport.zipimporter, "invalidate_caches", zipimport.zipimporter.invalidate_caches)
    assert importlib.import_module("zipped_one").VALUE == 1
    importer = sys.path_importer_cache[str(archive)]
    assert isinstance(importer, zipimport.zipimporter)

    daemon.keep_zip_directories()
    directory = importer._files  # type: ignore[attr-defined]
    importlib.invalidate_caches()
    assert importer._files is directory  # type: ignore[attr-defined]  # unchanged: not read again

    time.sleep(0.01)  # a new modification time, also on coarse clocks
    _zip(archive, {"zipped_one": "VALUE = 1\n", "zipped_two": "VALUE = 2\n"})
    importlib.invalidate_caches()
    assert importlib.import_module("zipped_two").VALUE == 2  # changed: read again, the new module found
    for name in ("zipped_one", "zipped_two"):
        sys.modules.pop(name, None)


@pytest.mark.unit
@pytest.mark.parametrize("version", ["4.0.0", "4.1.4", "4.2.1"])
def test_a_tested_pyspark_line_gets_the_fast_start(version: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert daemon.daemon_for(version) is daemon.fast_daemon
    assert capsys.readouterr().err == ""


@pytest.mark.unit
@pytest.mark.parametrize("version", ["3.5.2", "4.3.0", "5.0.0"])
def test_another_pyspark_line_runs_pysparks_own_daemon_and_says_so(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert daemon.daemon_for(version) is daemon.pyspark_daemon
    assert capsys.readouterr().err == (
        f"sparktune daemon: pyspark {version} is not a line the fast worker start is tested with "
        "(4.0, 4.1, 4.2); new Python workers start through PySpark's own daemon\n"
    )


@pytest.mark.unit
@pytest.mark.parametrize("start", ["fast_daemon", "pyspark_daemon"])
def test_both_daemons_announce_their_port_and_end_when_spark_closes_stdin(start: str) -> None:
    """What Spark's worker factory sees of either: a port on stdout, an exit when stdin closes."""
    import subprocess

    script = f"from airflow_provider_sparktune.tuning.dispatch import daemon; daemon.{start}()"
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        port = int.from_bytes(process.stdout.read(4), "big")
        assert 0 < port < 65536
        process.stdin.close()
        process.wait(timeout=60)  # PySpark's daemon exits 1 by its SIGHUP to its own process group
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
