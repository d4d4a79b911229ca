"""The worker daemon's zip directories: re-read only when a zip on sys.path changed."""

from __future__ import annotations

import importlib
import sys
import time
import zipfile
import zipimport
from pathlib import Path

import pytest

from airflow_provider_sparktune.tuning.dispatch import daemon

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12 re-reads zips lazily itself")


def _zip(path: Path, modules: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in modules.items():
            archive.writestr(f"{name}.py", source)


@pytest.mark.unit
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
