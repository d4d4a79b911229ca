"""Reload mode's cache: a dataset is read from storage once per executor, not once per trial.

SparkTrials runs every trial in a fresh Python worker (its task leaves the input unread, so Spark
never reuses the worker), and the resident dispatcher runs ``parallelism`` workers side by side, so
a cache inside one process would still read, and hold, one copy per worker. The first trial on an
executor therefore reads from storage and writes the host copy (``host_copy``: uncompressed, laid
out for mapping) under the application's Spark files directory, which Spark removes with the
application; every worker of that executor, the first included, maps the copy. A file lock makes
concurrent first trials wait for that read instead of repeating it. Entries are keyed by URI and the
files' versions (etag or modification time), so changed data is read again. With
``SPARKTUNE_CACHE_DIR`` the copies outlive the application; the directory is then held under
``SPARKTUNE_CACHE_MAX_BYTES`` (default 10 GiB) by removing the least recently used copies.
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

from airflow_provider_sparktune.data.host_copy import (
    COPY_SUFFIX,
    HostCopy,
    copy_dataset,
    forget_opened,
    open_host_copy,
    remove_copy,
)
from airflow_provider_sparktune.data.sizes import parse_bytes
from airflow_provider_sparktune.data.storage import list_dataset, read_raw
from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.redaction import SafeUri

log = logging.getLogger(__name__)

_memory_lock = threading.Lock()
_memory: dict[tuple[str, str], tuple[str, HostCopy]] = {}

CACHE_DIR_ENV = "SPARKTUNE_CACHE_DIR"
CACHE_MAX_BYTES_ENV = "SPARKTUNE_CACHE_MAX_BYTES"
DEFAULT_CACHE_MAX_BYTES = 10 * 1024**3


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
    """Forget this process's entries and mappings (the local copies stay): a new Python worker."""
    with _memory_lock:
        _memory.clear()
    forget_opened()


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


def load(uri: str, data_format: str, storage_options: Mapping[str, Any] | None = None) -> HostCopy:
    """The dataset for a trial: this process's mapping, else the executor's local copy, else storage."""
    listing = list_dataset(uri, storage_options)  # metadata only: the version check
    if listing is None:
        raise StagingError(
            f"data {SafeUri(uri)!r}: no such file or directory (it existed when it was planned)"
        )
    key = (uri, data_format)
    with _memory_lock:
        hit = _memory.get(key)
        if hit is not None and hit[0] == listing.fingerprint:
            return hit[1]
        _memory.clear()  # one dataset at a time: a reused worker does not keep every night's data
        copy = _local_copy_or_read(uri, data_format, listing.fingerprint, storage_options)
        _memory[key] = (listing.fingerprint, copy)
        return copy


def _local_copy_or_read(
    uri: str, data_format: str, fingerprint: str, storage_options: Mapping[str, Any] | None
) -> HostCopy:
    root = cache_dir()
    prefix = os.path.join(root, f"{_uri_key(uri)}-{data_format}")
    path = f"{prefix}-{fingerprint}{COPY_SUFFIX[data_format]}"
    with _file_lock(f"{prefix}.lock"):
        if os.path.exists(path):
            try:
                copy = open_host_copy(path, data_format)
                os.utime(path)  # recently used: the size cap removes the others first
                return copy
            except Exception as err:  # a damaged copy: read from storage again
                log.warning("local copy %s unreadable (%s); reading %s again", path, err, SafeUri(uri))
        started = time.monotonic()
        for old in glob.glob(f"{glob.escape(prefix)}-*"):  # earlier versions of this dataset
            remove_copy(old)
        try:
            copy_dataset(uri, data_format, storage_options, path)
        except OSError as err:  # e.g. a full local disk: this trial reads into memory, the next one again
            log.warning(
                "no local copy of %s (%s); later trials read it from storage again", SafeUri(uri), err
            )
            _count_read(root, uri, fingerprint)
            return HostCopy.in_memory(read_raw(uri, data_format, storage_options))
        _count_read(root, uri, fingerprint)
        log.info(
            "read %s from storage in %.1f s (pid %d)", SafeUri(uri), time.monotonic() - started, os.getpid()
        )
        evict_over_cap(root, keep=path)
        return open_host_copy(path, data_format)


def _count_read(root: str, uri: str, fingerprint: str) -> None:
    with open(os.path.join(root, f"{_uri_key(uri)}.reads"), "a") as reads:
        reads.write(f"{os.getpid()} {fingerprint} {time.time():.3f}\n")


def cache_max_bytes() -> int:
    """``$SPARKTUNE_CACHE_MAX_BYTES`` (``"20GiB"``, bytes), else 10 GiB."""
    text = os.environ.get(CACHE_MAX_BYTES_ENV)
    return parse_bytes(text, CACHE_MAX_BYTES_ENV) if text else DEFAULT_CACHE_MAX_BYTES


def evict_over_cap(root: str, keep: str) -> list[str]:
    """Remove the least recently used copies until the directory is under the cap; never ``keep``."""
    copies = []
    for suffix in set(COPY_SUFFIX.values()):
        for path in glob.glob(os.path.join(glob.escape(root), f"*{suffix}")):
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            copies.append((stat.st_mtime, stat.st_size, path))
    total, cap, removed = sum(size for _, size, _ in copies), cache_max_bytes(), []
    for _, size, path in sorted(copies):
        if total <= cap:
            break
        if path == keep:
            continue
        remove_copy(path)
        total -= size
        removed.append(path)
        log.info("cache %s over %d bytes: removed the least recently used copy %s", root, cap, path)
    return removed
