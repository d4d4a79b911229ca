"""The handle an objective receives as ``data``: ``data.value`` is the dataset, however it travelled.

The plan (``data/staging.py``) decides broadcast or reload on the Airflow worker and travels as JSON;
this handle carries it into every trial. In broadcast mode it ships one uncompressed copy per
executor host before the run; in reload mode each host's first trial makes that copy from storage.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from airflow_provider_sparktune.data.sizes import format_bytes
from airflow_provider_sparktune.data.staging import StagingPlan, decide
from airflow_provider_sparktune.data.storage import inspect_dataset, list_dataset
from airflow_provider_sparktune.exceptions import StagingError

log = logging.getLogger(__name__)


class StagedData:
    """What an objective receives as ``data``: ``data.value`` is the dataset, broadcast or re-read.

    Created on the driver from a plan. In broadcast mode ``attach`` reads the data once, writes the
    host copy (``host_copy``) and ships that file to the executors: a path on this host for a local
    master, ``SparkContext.addFile`` on a cluster (fetched once per executor), a Spark Connect
    artifact over Connect; ``release`` removes the driver's file when the run ends. Every Python
    worker maps the copy of its executor, so a host holds one copy whatever the parallelism. In
    reload mode the first trial of an executor makes that copy from storage (``cache``). The handle
    pickles into every trial: the copy's name and path travel, never the data; the storage options
    travel only in reload mode, where the executors need them.
    """

    def __init__(
        self,
        plan: StagingPlan,
        *,
        storage_options: Mapping[str, Any] | None = None,
        columns: tuple[str, ...] | None = None,
        rows: int | None = None,
    ) -> None:
        self.plan = plan
        self.columns = columns
        self.rows = rows
        self._storage_options = dict(storage_options or {})
        self._shipped: str | None = None  # broadcast mode: the file name executors find in SparkFiles
        self._driver_path: str | None = None  # broadcast mode: the copy on the driver's host

    @classmethod
    def open(cls, plan: StagingPlan, storage_options: Mapping[str, Any] | None = None) -> StagedData:
        """Check on the driver that the data is readable and not empty, without loading it."""
        info = inspect_dataset(plan.safe_uri, plan.format, storage_options)
        return cls(plan, storage_options=storage_options, columns=info.columns, rows=info.rows)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._shipped is not None:  # the executors read the shipped copy, never storage
            state["_storage_options"] = {}
        return state

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def value(self) -> Any:
        """The dataset: a pandas DataFrame (parquet, csv), an array (npy), a dict of arrays (npz).

        Numeric columns without nulls are read-only views of this host's shared copy; copy the
        frame (``data.value.copy()``) before changing it in place.
        """
        return self._host_copy().value

    @property
    def arrow(self) -> Any:
        """The dataset as a ``pyarrow.Table`` of zero-copy views (parquet, csv), for objectives that feed
        Arrow to their library directly (LightGBM, XGBoost, polars); ``None`` for numpy data."""
        return self._host_copy().arrow

    def _host_copy(self) -> Any:
        from airflow_provider_sparktune.data.host_copy import open_host_copy

        if self._shipped is None:
            from airflow_provider_sparktune.data.cache import load

            return load(self.plan.uri, self.plan.format, self._storage_options)
        return open_host_copy(self._shipped_path(), self.plan.format)

    def _shipped_path(self) -> str:
        """This executor's copy of the shipped file, else the driver's own (a local master: same host)."""
        assert self._shipped is not None
        try:
            from pyspark import SparkFiles

            fetched = SparkFiles.get(self._shipped)
        except Exception:  # no SparkFiles in this process: the driver itself
            fetched = ""
        if fetched and os.path.exists(fetched):
            return fetched
        if self._driver_path and os.path.exists(self._driver_path):
            return self._driver_path
        raise StagingError(
            f"data {self.plan.safe_uri!r}: the staged copy {self._shipped} is not on this executor (it is "
            "removed when the run ends); set broadcast_threshold_bytes below the data's size to re-read "
            "it from storage instead"
        )

    def attach(self, spark: Any) -> StagingPlan:
        """Driver side, before the trials: in broadcast mode read the data once and ship the host copy.

        The dataset is listed again first: a plan that came through XCom or run conf is not trusted
        for its size. When the files, or the uncompressed copy, are not below the threshold, fall back
        to reload and say so in the log and in the plan.
        """
        if self.plan.mode != "broadcast" or self.attached:
            return self.plan
        started = time.monotonic()
        listing = list_dataset(self.plan.safe_uri, self._storage_options)
        if listing is None:
            raise StagingError(
                f"data {self.plan.safe_uri!r}: no such file or directory (it existed when planned)"
            )
        if listing.size_bytes >= self.plan.threshold_bytes:
            self.plan = replace(self.plan, size_bytes=listing.size_bytes)
            return self._fall_back_to_reload(decide(listing.size_bytes, self.plan.threshold_bytes)[1])
        from airflow_provider_sparktune.data.host_copy import COPY_SUFFIX, copy_dataset, remove_copy
        from airflow_provider_sparktune.session_kind import is_connect

        connect = is_connect(spark)
        name = f"sparktune-data-{uuid.uuid4().hex[:12]}{COPY_SUFFIX[self.plan.format]}"
        path = os.path.join(_driver_files_dir(spark, connect), name)
        size = copy_dataset(self.plan.uri, self.plan.format, self._storage_options, path)
        if size >= self.plan.threshold_bytes:
            remove_copy(path)
            limit = format_bytes(self.plan.threshold_bytes)
            return self._fall_back_to_reload(
                f"{format_bytes(self.plan.size_bytes)} of data files is below the broadcast threshold of "
                f"{limit}, but the loaded dataset takes {format_bytes(size)} uncompressed, not below "
                f"{limit} (the files are compressed): fell back to reload, trials read it from storage "
                "once per executor"
            )
        self._driver_path = path
        try:
            how = self._ship(spark, connect, path)
        except Exception as err:  # e.g. a Connect server that refuses artifacts
            self.release()
            return self._fall_back_to_reload(
                f"{format_bytes(self.plan.size_bytes)} of data files: shipping the copy to the executors "
                f"failed ({type(err).__name__}: {self.plan.safe_uri.hide_in(str(err))[:200]}): fell back to reload, trials read it from "
                "storage once per executor"
            )
        self._shipped = name
        log.info(
            "data %s: %s of data files, %s uncompressed: read once on the driver and %s (%.1f s)",
            self.plan.safe_uri,
            format_bytes(self.plan.size_bytes),
            format_bytes(size),
            how,
            time.monotonic() - started,
        )
        return self.plan

    def _ship(self, spark: Any, connect: bool, path: str) -> str:
        """Make the copy reachable from every executor; says how, for the task log."""
        if connect:
            spark.addArtifacts(path, file=True)
            return (
                "uploaded once as a Spark Connect artifact (Connect has no broadcast variables); each "
                "executor's Python workers map one copy"
            )
        context = spark.sparkContext
        if str(context.master).startswith("local"):
            return "written once on this host, where every Python worker maps it"
        context.addFile(path)
        return "sent once to each executor (SparkContext.addFile), whose Python workers map one copy"

    def _fall_back_to_reload(self, reason: str) -> StagingPlan:
        self.plan = replace(self.plan, mode="reload", reason=reason)
        log.warning("data %s: %s", self.plan.safe_uri, reason)
        return self.plan

    @property
    def attached(self) -> bool:
        return self._shipped is not None

    @property
    def shipped_copy(self) -> str | None:
        """The name of the copy shipped from the driver while attached in broadcast mode, else ``None``."""
        return self._shipped

    def release(self) -> None:
        """Remove the driver's copy when the run ends (executors' copies go with the application)."""
        path, self._driver_path, self._shipped = self._driver_path, None, None
        if path is None:
            return
        from airflow_provider_sparktune.data.host_copy import remove_copy

        remove_copy(path)
        folder = os.path.dirname(path)
        if os.path.basename(folder).startswith(_OWN_DIR_PREFIX):  # over Connect: the folder is ours too
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        log.info("data %s: the driver's staged copy removed", self.plan.safe_uri)

    def __repr__(self) -> str:  # never shows the storage options: they may hold credentials
        return f"StagedData(uri={self.plan.safe_uri!r}, format={self.plan.format!r}, mode={self.plan.mode!r})"


def _driver_files_dir(spark: Any, connect: bool) -> str:
    """Where the driver writes the copy: Spark's own files directory, which Spark deletes when the
    application stops (also when a killed task's JVM shuts down); over Connect a temp directory."""
    if not connect:
        from pyspark import SparkFiles

        root = SparkFiles.getRootDirectory()
        if root:
            return str(root)
    import tempfile

    return tempfile.mkdtemp(prefix=_OWN_DIR_PREFIX)


_OWN_DIR_PREFIX = "sparktune-staged-"
