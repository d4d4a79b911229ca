"""PySpark's Python worker daemon, with what every new worker needs loaded once, before the forks.

A fresh session's first wide job waits for its Python workers: PySpark 4 forks each one from its
daemon and only then imports the worker module, from ``pyspark.zip`` (no cached bytecode: compiled
again in every worker), and each worker's first task calls ``importlib.invalidate_caches()``, which on
Python 3.10 and 3.11 re-reads the whole directory of every zip on ``sys.path`` (CPython gh-103200,
fixed in 3.12). That is about 0.5 s of CPU per new worker: on 2 cores, 16 workers starting together
reach their first task about 4 s after the job starts.

Run as PySpark's daemon (``spark.python.daemon.module``, which the Spark hook sets for the sessions it
makes): the worker code is imported here once and inherited by every fork; the zips' directories are
re-read only when a zip changed. Nothing that starts a thread is imported before the forks (PySpark's
reason to import late: pandas and pyarrow start threads).

The fast start leans on PySpark's internals (``pyspark.daemon.manager``, the worker modules' names),
so it runs only on the pyspark lines it is tested with (``SUPPORTED_LINES``); on any other, or when
those internals are missing, the executor's pyspark runs its own daemon, and says so on the
executor's stderr.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from collections.abc import Callable

from airflow_provider_sparktune.spark_version import SUPPORTED_LINES, spark_line

DAEMON_MODULE = "airflow_provider_sparktune.tuning.dispatch.daemon"
DAEMON_MODULE_CONF = "spark.python.daemon.module"

# imported by every worker for its first task, or by the resident trial tasks
_WORKER_MODULES = (
    "pyspark.worker",
    "pyspark.core.files",
    "multiprocessing.connection",
    "airflow_provider_sparktune.tuning.dispatch.resident",
    "airflow_provider_sparktune.tuning.objective",
)


def preload() -> None:
    """Import what each forked worker would otherwise import again for itself."""
    import importlib

    for name in _WORKER_MODULES:
        importlib.import_module(name)


def keep_zip_directories() -> None:
    """``invalidate_caches()`` re-reads a zip's directory only when the zip changed (3.12's behaviour)."""
    if sys.version_info >= (3, 12):
        return
    import zipimport

    reread = zipimport.zipimporter.invalidate_caches
    read_at: dict[str, tuple[int, int]] = {}

    def stamp(archive: str) -> tuple[int, int] | None:
        try:
            status = os.stat(archive)
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size

    def invalidate_caches(self: zipimport.zipimporter) -> None:
        now = stamp(self.archive)
        if now is not None and read_at.get(self.archive) == now:
            return
        reread(self)
        if now is not None:
            read_at[self.archive] = now

    for importer in list(sys.path_importer_cache.values()):
        if isinstance(importer, zipimport.zipimporter):
            current = stamp(importer.archive)
            if current is not None:
                read_at[importer.archive] = current  # read when the importer was made, in this process
    zipimport.zipimporter.invalidate_caches = invalidate_caches  # type: ignore[method-assign]


def pyspark_daemon() -> None:
    """PySpark's own daemon, unchanged: what ``spark.python.daemon.module`` runs by default."""
    import runpy

    runpy.run_module("pyspark.daemon", run_name="__main__", alter_sys=True)


def fast_daemon() -> None:
    """Preload, then PySpark's daemon loop in this process, so every fork inherits what was loaded."""
    try:
        from pyspark.daemon import manager
    except ImportError:
        print(
            "sparktune daemon: pyspark.daemon has no manager(); running PySpark's own daemon", file=sys.stderr
        )
        pyspark_daemon()
        return
    try:
        preload()
        keep_zip_directories()
    except Exception:  # the daemon must start: workers then import for themselves, as PySpark does
        traceback.print_exc(file=sys.stderr)
    gc.freeze()  # the forks share these objects: no collection touches (and copies) their pages
    manager()


def daemon_for(version: str) -> Callable[[], None]:
    """The fast start on a tested pyspark line; PySpark's own daemon on any other, said on stderr."""
    if spark_line(version) in SUPPORTED_LINES:
        return fast_daemon
    lines = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED_LINES)
    print(
        f"sparktune daemon: pyspark {version} is not a line the fast worker start is tested with ({lines}); "
        "new Python workers start through PySpark's own daemon",
        file=sys.stderr,
    )
    return pyspark_daemon


def main() -> None:
    from pyspark.version import __version__

    daemon_for(__version__)()


if __name__ == "__main__":
    main()
