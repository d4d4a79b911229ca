"""How the training data reaches the trials: broadcast once, or re-read from storage, decided by size.

Data captured in the objective's closure is re-sent with every trial. A broadcast sends it once per
executor, but Spark limits a broadcast to 2 GiB; above that each trial must read it from storage.
The decision is made here from the dataset's size, recorded in a JSON ``StagingPlan`` that travels
through XCom, and hidden from objectives: they always receive a ``StagedData`` and read
``data.value``, whichever way the data travelled.

In reload mode the data is read from storage once per executor (see ``cache``), not once per trial.

Spark Connect has no broadcast variables. There, broadcast mode still loads the data once on the
driver, and ships it inside the resident tasks' closure while it fits Connect's message limit, else
as a Connect artifact uploaded once, else falls back to reload; the plan's reason says which.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from airflow_provider_sparktune.data.storage import (
    FORMATS,
    Listing,
    detect_format,
    inspect_dataset,
    list_dataset,
    marker_exists,
    normalize_uri,
    read_dataset,
)
from airflow_provider_sparktune.exceptions import StagingError

log = logging.getLogger(__name__)

BROADCAST_LIMIT_BYTES = 2 * 1024**3  # Spark's limit on one broadcast variable
# Spark Connect: data up to this size travels inside the query plan, half of Connect's default
# 128 MiB message limit (the objective travels in the same message); above it, as an artifact.
CONNECT_INLINE_LIMIT_BYTES = 64 * 1024**2
MODES = ("broadcast", "reload")
Mode = Literal["broadcast", "reload"]
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


@dataclass(frozen=True)
class StagingPlan:
    """Where the data is and how trials get it; JSON-native, so it can travel through XCom."""

    uri: str
    format: str
    size_bytes: int
    threshold_bytes: int
    mode: Mode
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_threshold(self, threshold_bytes: int) -> StagingPlan:
        """The same measurement decided again against another threshold (no new look at storage)."""
        mode, reason = decide(self.size_bytes, threshold_bytes)
        return replace(self, threshold_bytes=threshold_bytes, mode=mode, reason=reason)

    @classmethod
    def from_value(cls, value: Any, field: str = "data") -> StagingPlan:
        """A plan from a sensor's XCom: a dict, its JSON, or the Python text a rendered template gives."""
        if isinstance(value, StagingPlan):
            return value
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise StagingError(
                        f"{field}: {text[:80]!r} is neither a dataset URI nor a staging plan; pass a URI or "
                        "the plan StagedDataSensor returned (e.g. \"{{ ti.xcom_pull(task_ids='wait') | tojson }}\")"
                    ) from None
        if not isinstance(value, Mapping):
            raise StagingError(
                f"{field}: expected a dataset URI or a staging plan (dict), got {type(value).__name__}"
            )
        missing = [k for k in ("uri", "format", "size_bytes", "threshold_bytes", "mode") if k not in value]
        if missing:
            raise StagingError(
                f"{field}: the staging plan lacks {missing}; pass the whole plan StagedDataSensor returned"
            )
        if value["mode"] not in MODES:
            raise StagingError(f"{field}.mode: {value['mode']!r} is not one of {', '.join(MODES)}")
        if value["format"] not in FORMATS:
            raise StagingError(f"{field}.format: {value['format']!r} is not one of {', '.join(FORMATS)}")
        try:
            size, threshold = int(value["size_bytes"]), int(value["threshold_bytes"])
        except (TypeError, ValueError):
            raise StagingError(f"{field}: size_bytes and threshold_bytes must be integers") from None
        return cls(
            uri=str(value["uri"]),
            format=str(value["format"]),
            size_bytes=size,
            threshold_bytes=threshold,
            mode=value["mode"],
            reason=str(value.get("reason") or ""),
        )


def decide(size_bytes: int, threshold_bytes: int) -> tuple[Mode, str]:
    """Broadcast below the threshold, reload at or above it; the reason says which and why."""
    size, limit = format_bytes(size_bytes), format_bytes(threshold_bytes)
    if size_bytes < threshold_bytes:
        return "broadcast", (
            f"{size} of data files is below the broadcast threshold of {limit}: loaded once on the driver "
            "and broadcast to every executor"
        )
    return "reload", (
        f"{size} of data files is not below the broadcast threshold of {limit}: trials read it from storage, "
        "once per executor, which keeps a local copy for its later trials"
    )


def check_threshold(threshold_bytes: Any, field: str = "broadcast_threshold_bytes") -> int:
    threshold = parse_bytes(threshold_bytes, field)
    if threshold <= 0:
        raise StagingError(f"{field}: must be a positive number of bytes (the default is 2 GiB)")
    return threshold


def plan_from_listing(listing: Listing, data_format: str | None, threshold_bytes: int) -> StagingPlan:
    if not listing.files:
        raise StagingError(
            f"data {listing.uri!r}: the directory holds no data files (names starting with '_' or '.' are "
            "not data); check the path, or wait for the upstream job with StagedDataSensor"
        )
    if listing.size_bytes == 0:
        raise StagingError(
            f"data {listing.uri!r}: the dataset is empty (0 bytes); check that the upstream job wrote it, "
            "or wait for it with StagedDataSensor(min_size_bytes=...)"
        )
    fmt = detect_format(listing.uri, listing, data_format)
    mode, reason = decide(listing.size_bytes, threshold_bytes)
    return StagingPlan(listing.uri, fmt, listing.size_bytes, threshold_bytes, mode, reason)


def plan_dataset(
    uri: str,
    *,
    data_format: str | None = None,
    threshold_bytes: Any = BROADCAST_LIMIT_BYTES,
    storage_options: Mapping[str, Any] | None = None,
) -> StagingPlan:
    """Measure the dataset (metadata only, nothing is read) and decide broadcast or reload."""
    threshold = check_threshold(threshold_bytes)
    uri = normalize_uri(uri)
    listing = list_dataset(uri, storage_options)
    if listing is None:
        raise StagingError(
            f"data {uri!r}: no such file or directory; check the path, or wait for it with StagedDataSensor"
        )
    return plan_from_listing(listing, data_format, threshold)


@dataclass(frozen=True)
class Readiness:
    """One poke's verdict; ``observed`` ([size, data files]) is compared with the next poke's."""

    ready: bool
    message: str
    observed: list[int] | None = None
    plan: StagingPlan | None = None
    awaiting_stability: bool = False  # everything else holds; only the size check needs another look


def check_readiness(
    uri: str,
    *,
    previous: Any = None,
    data_format: str | None = None,
    success_marker: str | None = None,
    min_size_bytes: int = 0,
    threshold_bytes: int = BROADCAST_LIMIT_BYTES,
    require_stable: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> Readiness:
    """Ready when the data exists, its marker is there, it is big enough and its size held since last poke."""
    uri = normalize_uri(uri)
    listing = list_dataset(uri, storage_options)
    if listing is None:
        return Readiness(False, f"{uri} does not exist yet")
    if success_marker and not marker_exists(uri, success_marker, storage_options):
        return Readiness(False, f"{uri} exists, waiting for its success marker {success_marker!r}")
    if not listing.files or listing.size_bytes == 0:
        return Readiness(False, f"{uri} exists but holds no data yet")
    observed = [listing.size_bytes, len(listing.files)]
    if listing.size_bytes < min_size_bytes:
        return Readiness(
            False,
            f"{uri} holds {format_bytes(listing.size_bytes)}, waiting for at least {format_bytes(min_size_bytes)}",
            observed,
        )
    if require_stable and list(previous or []) != observed:
        what = "first sight" if previous is None else f"was {previous[0]} bytes in {previous[1]} files"
        return Readiness(
            False,
            f"{uri} holds {listing.size_bytes} bytes in {len(listing.files)} data files ({what}); "
            "waiting one more poke to see the size hold",
            observed,
            awaiting_stability=True,
        )
    plan = plan_from_listing(listing, data_format, threshold_bytes)
    return Readiness(True, f"{uri} is ready: {plan.reason}", observed, plan)


# ---------------------------------------------------------------------------------------------------
# Broadcast: the serialized size decides, not only the files' size
# ---------------------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _CountingSink:
    """A file that only counts what pickle writes, and stops it once past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def write(self, chunk: Any) -> int:
        size = memoryview(chunk).nbytes
        self.count += size
        if self.count > self.limit:
            raise _TooLarge
        return size


def serialized_size(value: Any, limit: int) -> int | None:
    """Bytes of ``value`` pickled as a broadcast is, or ``None`` once it passes ``limit``."""
    sink = _CountingSink(limit)
    try:
        pickle.dump(value, sink, protocol=pickle.HIGHEST_PROTOCOL)
    except _TooLarge:
        return None
    return sink.count


# ---------------------------------------------------------------------------------------------------
# The handle objectives receive
# ---------------------------------------------------------------------------------------------------


class StagedData:
    """What an objective receives as ``data``: ``data.value`` is the dataset, broadcast or re-read.

    Created on the driver from a plan, ``attach`` broadcasts it (broadcast mode) and ``release``
    destroys the broadcast when the run ends. It pickles into every trial: a broadcast travels as its
    id; in reload mode only the URI and the storage options travel.
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
        self._broadcast: Any = None
        self._inline: Any = None  # Spark Connect: the dataset itself, inside the resident tasks' closure
        self._artifact: str | None = None  # Spark Connect: the name of the uploaded artifact
        self._artifact_path: str | None = None  # its file on the driver

    @classmethod
    def open(cls, plan: StagingPlan, storage_options: Mapping[str, Any] | None = None) -> StagedData:
        """Check on the driver that the data is readable and not empty, without loading it."""
        info = inspect_dataset(plan.uri, plan.format, storage_options)
        return cls(plan, storage_options=storage_options, columns=info.columns, rows=info.rows)

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def value(self) -> Any:
        """The dataset: the broadcast's value, or this worker's cached read of the URI."""
        if self._broadcast is not None:
            return self._broadcast.value
        if self._inline is not None:
            return self._inline
        if self._artifact is not None:
            from airflow_provider_sparktune.data.cache import load_artifact

            return load_artifact(self._artifact)
        from airflow_provider_sparktune.data.cache import load

        return load(self.plan.uri, self.plan.format, self._storage_options)

    def attach(self, spark: Any) -> StagingPlan:
        """Driver side, before the trials: in broadcast mode load the data once and broadcast it.

        When the loaded data serializes past the threshold although its files were smaller
        (compression), fall back to reload and say so in the log and in the plan.
        """
        if self.plan.mode != "broadcast" or self.attached:
            return self.plan
        started = time.monotonic()
        value = read_dataset(self.plan.uri, self.plan.format, self._storage_options)
        size = serialized_size(value, self.plan.threshold_bytes)
        if size is None:
            limit = format_bytes(self.plan.threshold_bytes)
            reason = (
                f"{format_bytes(self.plan.size_bytes)} of data files is below the broadcast threshold of "
                f"{limit}, but the loaded dataset serializes to more than {limit} (the files are "
                "compressed): fell back to reload, trials read it from storage once per executor"
            )
            return self._fall_back_to_reload(reason)
        from airflow_provider_sparktune.tuning.dispatch.launch import is_connect

        if is_connect(spark):
            return self._ship_over_connect(spark, value, size, started)
        self._broadcast = spark.sparkContext.broadcast(value)
        log.info(
            "data %s: broadcast %s (serialized) to the executors, loaded and sent in %.1f s",
            self.plan.uri,
            format_bytes(size),
            time.monotonic() - started,
        )
        return self.plan

    def _fall_back_to_reload(self, reason: str) -> StagingPlan:
        self.plan = replace(self.plan, mode="reload", reason=reason)
        log.warning("data %s: %s", self.plan.uri, reason)
        return self.plan

    @property
    def attached(self) -> bool:
        return self._broadcast is not None or self._inline is not None or self._artifact is not None

    def _ship_over_connect(self, spark: Any, value: Any, size: int, started: float) -> StagingPlan:
        """No broadcast variables over Spark Connect: in the tasks' closure, else an artifact, else reload."""
        size_text, took = format_bytes(size), time.monotonic() - started
        loaded = f"{format_bytes(self.plan.size_bytes)} of data files, {size_text} serialized"
        if size <= CONNECT_INLINE_LIMIT_BYTES:
            self._inline = value
            how = (
                f"{loaded}: Spark Connect has no broadcast variables, so it was loaded once on the driver "
                "and ships inside each resident task's closure"
            )
        else:
            try:
                self._artifact = self._upload(spark, value)
            except Exception as err:
                reason = (
                    f"{loaded}: too large for a Spark Connect message and the artifact upload failed "
                    f"({type(err).__name__}: {str(err)[:200]}): fell back to reload, trials read it from "
                    "storage once per executor"
                )
                return self._fall_back_to_reload(reason)
            how = (
                f"{loaded}: Spark Connect has no broadcast variables and it is too large for one message, "
                f"so it was loaded once on the driver and uploaded once as the Spark Connect artifact "
                f"{self._artifact}, read once per executor process"
            )
        self.plan = replace(self.plan, reason=how)
        log.info("data %s: %s (%.1f s)", self.plan.uri, how, took)
        return self.plan

    def _upload(self, spark: Any, value: Any) -> str:
        import tempfile
        import uuid

        name = f"sparktune-data-{uuid.uuid4().hex[:12]}.pkl"
        path = os.path.join(tempfile.mkdtemp(prefix="sparktune-artifact-"), name)
        self._artifact_path = path
        with open(path, "wb") as out:
            pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        spark.addArtifacts(path, file=True)
        return name

    def release(self) -> None:
        """Destroy the broadcast (driver and executors), drop what Spark Connect shipped; safe to repeat."""
        self._inline, self._artifact = None, None
        path, self._artifact_path = self._artifact_path, None
        if path is not None:
            import shutil

            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        broadcast, self._broadcast = self._broadcast, None
        if broadcast is None:
            return
        try:
            broadcast.destroy()
            log.info("data %s: broadcast destroyed", self.plan.uri)
        except Exception:
            log.exception("data %s: destroying the broadcast failed", self.plan.uri)

    @property
    def broadcast(self) -> Any:
        """The Spark broadcast while attached in broadcast mode, else ``None``."""
        return self._broadcast

    def __repr__(self) -> str:  # never shows the storage options: they may hold credentials
        return f"StagedData(uri={self.plan.uri!r}, format={self.plan.format!r}, mode={self.plan.mode!r})"
