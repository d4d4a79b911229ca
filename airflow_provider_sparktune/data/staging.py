"""How the training data reaches the trials: broadcast once, or re-read from storage, decided by size.

Data captured in the objective's closure is re-sent with every trial. Broadcast mode reads it once
on the driver (the Airflow worker) and ships one uncompressed copy to each executor; reload mode has
each executor read it from storage once. Either way every Python worker of an executor maps the same
local copy (``host_copy``), so memory does not grow with parallelism. The decision is made here from
the dataset's size (broadcast below ``broadcast_threshold_bytes``, 2 GiB by default, so that the
Airflow worker never holds and serves more than that), recorded in a JSON ``StagingPlan`` that
travels through XCom, and hidden from objectives: they always receive a ``StagedData``
(``data/staged.py``) and read ``data.value``, whichever way the data travelled. Messages name the
dataset through ``SafeUri`` (``StagingPlan.safe_uri``), never with the URI's credentials.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from airflow_provider_sparktune.data.sizes import format_bytes, parse_bytes
from airflow_provider_sparktune.data.storage import (
    FORMATS,
    Listing,
    detect_format,
    list_dataset,
    marker_exists,
    normalize_uri,
)
from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.redaction import SafeUri, redact_uri

BROADCAST_LIMIT_BYTES = 2 * 1024**3  # the default threshold: what the Airflow worker reads and ships
MODES = ("broadcast", "reload")
Mode = Literal["broadcast", "reload"]


@dataclass(frozen=True)
class StagingPlan:
    """Where the data is and how trials get it; JSON-native, so it can travel through XCom."""

    uri: str
    format: str
    size_bytes: int
    threshold_bytes: int
    mode: Mode
    reason: str

    @property
    def safe_uri(self) -> SafeUri:
        """The dataset's URI for messages and logs: its text is redacted."""
        return SafeUri(self.uri)

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
                        f"{field}: {redact_uri(text)[:80]!r} is neither a dataset URI nor a staging plan; pass a URI or "
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
            uri=value["uri"].raw if isinstance(value["uri"], SafeUri) else str(value["uri"]),
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
            f"{size} of data files is below the broadcast threshold of {limit}: read once on the driver "
            "and shipped to every executor host, where its Python workers share one copy"
        )
    return "reload", (
        f"{size} of data files is not below the broadcast threshold of {limit}: trials read it from storage, "
        "once per executor, whose Python workers share the local copy it keeps"
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
    return StagingPlan(listing.uri.raw, fmt, listing.size_bytes, threshold_bytes, mode, reason)


def plan_dataset(
    uri: str | SafeUri,
    *,
    data_format: str | None = None,
    threshold_bytes: Any = BROADCAST_LIMIT_BYTES,
    storage_options: Mapping[str, Any] | None = None,
) -> StagingPlan:
    """Measure the dataset (metadata only, nothing is read) and decide broadcast or reload."""
    threshold = check_threshold(threshold_bytes)
    uri = SafeUri(normalize_uri(uri))
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
    uri: str | SafeUri,
    *,
    previous: Any = None,
    data_format: str | None = None,
    success_marker: str | None = None,
    min_size_bytes: int = 0,
    threshold_bytes: int = BROADCAST_LIMIT_BYTES,
    require_stable: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> Readiness:
    """Ready when the data exists, its marker is there, it is big enough and its size held since last poke.

    ``message`` names the URI redacted: the sensor and the trigger log it at every poke.
    """
    uri = SafeUri(normalize_uri(uri))
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
