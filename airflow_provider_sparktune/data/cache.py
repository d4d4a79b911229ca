"""Reload mode's cache: a dataset is read from storage once per executor, not once per trial.

SparkTrials runs every trial in a fresh Python worker (its task leaves the input unread, so Spark
never reuses the worker), so a cache inside the process alone would still read once per trial. The
first trial on an executor therefore reads from storage and writes an uncompressed local copy
(Arrow IPC or ``.npy``) under the application's Spark files directory, which Spark removes with the
application; later trials on that executor memory-map the copy. A file lock makes concurrent trials
wait for the first read instead of repeating it. Entries are keyed by URI and the files' versions
(etag or modification time), so changed data is read again. An in-process layer on top serves a
Python worker that runs several trials without touching disk.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from airflow_provider_sparktune.data.storage import list_dataset, read_raw, to_value
from airflow_provider_sparktune.exceptions import StagingError

log = logging.getLogger(__name__)

_COPY_SUFFIX = {"parquet": ".arrow", "csv": ".arrow", "npy": ".npy", "npz": ".npz"}
_memory_lock = threading.Lock()
_memory: dict[tuple[str, str], tuple[str, Any]] = {}


CACHE_DIR_ENV = "SPARKTUNE_CACHE_DIR"


def cache_dir() -> str:
    """``$SPARKTUNE_CACHE_DIR``, else this Spark application's files directory on this host (Spark deletes
    it with the application), else the temp directory."""
    root = os.environ.get(CACHE_DIR_ENV)
    if not root:
        try:
            from pyspark import SparkFiles

            root = SparkFiles.getRootDirectory()
        except Exception:  # no SparkContext in this process: a plain script, or the driver before Spark
            root = tempfile.gettempdir()
    path = os.path.join(root, "sparktune-cache")
    os.makedirs(path, exist_ok=True)
    return path


def _uri_key(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def read_count(uri: str) -> int:
    """Storage reads of ``uri`` on this host by this Spark application, whichever process made them."""
    try:
        with open(os.path.join(cache_dir(), f"{_uri_key(uri)}.reads")) as reads:
            return sum(1 for _ in reads)
    except FileNotFoundError:
        return 0


def clear_memory() -> None:
    """Forget this process's in-memory entries (the local copies stay)."""
    with _memory_lock:
        _memory.clear()


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent first trials may each read; still correct
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(uri: str, data_format: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The dataset for a trial: from this process's memory, else the executor's local copy, else storage."""
    listing = list_dataset(uri, storage_options)  # metadata only: the version check
    if listing is None:
        raise StagingError(f"data {uri!r}: no such file or directory (it existed when it was planned)")
    key = (uri, data_format)
    with _memory_lock:
        hit = _memory.get(key)
        if hit is not None and hit[0] == listing.fingerprint:
            return hit[1]
        _memory.pop(key, None)
        value = _local_copy_or_read(uri, data_format, listing.fingerprint, storage_options)
        _memory[key] = (listing.fingerprint, value)
        return value


def _local_copy_or_read(
    uri: str, data_format: str, fingerprint: str, storage_options: Mapping[str, Any] | None
) -> Any:
    root = cache_dir()
    prefix = os.path.join(root, f"{_uri_key(uri)}-{data_format}")
    copy = f"{prefix}-{fingerprint}{_COPY_SUFFIX[data_format]}"
    with _file_lock(f"{prefix}.lock"):
        if os.path.exists(copy):
            try:
                return _read_copy(copy, data_format)
            except Exception as err:  # a damaged copy: read from storage again
                log.warning("local copy %s unreadable (%s); reading %s again", copy, err, uri)
        started = time.monotonic()
        raw = read_raw(uri, data_format, storage_options)
        with open(os.path.join(root, f"{_uri_key(uri)}.reads"), "a") as reads:
            reads.write(f"{os.getpid()} {fingerprint} {time.time():.3f}\n")
        for old in glob.glob(f"{glob.escape(prefix)}-*"):  # earlier versions of this dataset
            if old != copy:
                _remove(old)
        try:
            _write_copy(raw, copy, data_format)
        except OSError as err:  # e.g. a full local disk: this trial goes on, the next one reads again
            log.warning("no local copy of %s (%s); later trials read it from storage again", uri, err)
        log.info("read %s from storage in %.1f s (pid %d)", uri, time.monotonic() - started, os.getpid())
        return to_value(raw)


def _write_copy(raw: Any, copy: str, data_format: str) -> None:
    tmp = f"{copy}.{os.getpid()}.tmp"
    try:
        if data_format in ("parquet", "csv"):
            import pyarrow as pa

            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, raw.schema) as writer:
                writer.write_table(raw)
        else:
            import numpy as np

            with open(tmp, "wb") as out:
                if data_format == "npy":
                    np.save(out, raw, allow_pickle=False)
                else:
                    np.savez(out, **raw)
        os.replace(tmp, copy)
    finally:
        _remove(tmp)


def _read_copy(copy: str, data_format: str) -> Any:
    if data_format in ("parquet", "csv"):
        import pyarrow as pa

        with pa.memory_map(copy) as source:
            return pa.ipc.open_file(source).read_all().to_pandas()
    import numpy as np

    if data_format == "npy":
        return np.load(copy, mmap_mode="c", allow_pickle=False)  # copy-on-write: trials cannot alter it
    with np.load(copy, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


_artifacts: dict[str, Any] = {}


def load_artifact(name: str) -> Any:
    """A dataset shipped as a Spark Connect artifact: unpickled once per Python worker, then kept."""
    with _memory_lock:
        if name not in _artifacts:
            import pickle

            _artifacts.clear()  # one run's dataset at a time: a worker does not keep every night's data

            from pyspark import SparkFiles

            try:
                with open(SparkFiles.get(name), "rb") as source:
                    _artifacts[name] = pickle.load(source)
            except OSError as err:
                raise StagingError(
                    f"the Spark Connect artifact {name} holding the staged data is not on this executor ({err})"
                ) from err
        return _artifacts[name]
