"""The parent run's trial list as numbered JSON-lines parts: ``trials/part-00000.jsonl``, ...

One ``trials.json`` of a 100,000-trial run is 100-200 MB: one upload that MLflow's 20 s request
timeout cuts off, retried whole until ``mlflow_retry_timeout``, and a file no reader can stream.
Each part holds at most :data:`PART_RECORDS` trials, one JSON object a line in trial id order, and is
its own upload: a part that was written is not written again when a later one fails. Runs written
before the parts came in have one ``trials.json`` (a JSON list): :func:`read_trials` reads both.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.records import TrialRecord

TRIALS_DIR = "trials"
PART_RECORDS = 5000  # trials a part: about 2-5 MB, well within one request's time
LEGACY_FILE = "trials.json"


def part_name(index: int) -> str:
    """``trials/part-00003.jsonl``: names sort in part order."""
    return posixpath.join(TRIALS_DIR, f"part-{index:05d}.jsonl")


def part_count(n_records: int, per_part: int = PART_RECORDS) -> int:
    """Parts for ``n_records`` trials; a run with no trial still has one (empty) part, so readers
    can tell "no trials" from "not written"."""
    return max(1, -(-n_records // per_part))


def part_text(records: Sequence[TrialRecord]) -> str:
    """One part: a JSON object a line (``allow_nan=False``: records hold JSON-native values only)."""
    return "".join(json.dumps(record.to_dict(), allow_nan=False) + "\n" for record in records)


def parse_part(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_trials(client: Any, run_id: str) -> list[dict[str, Any]]:
    """Every trial of a parent run as written to its artifacts: the parts in order, or the
    ``trials.json`` of a run written before them; ``[]`` when neither is there."""
    names = sorted(
        info.path
        for info in client.list_artifacts(run_id, TRIALS_DIR)
        if not info.is_dir and info.path.endswith(".jsonl")
    )
    if names:
        trials: list[dict[str, Any]] = []
        for name in names:
            with open(client.download_artifacts(run_id, name)) as handle:
                trials.extend(parse_part(handle.read()))
        return trials
    if any(info.path == LEGACY_FILE for info in client.list_artifacts(run_id)):
        with open(client.download_artifacts(run_id, LEGACY_FILE)) as handle:
            legacy = json.load(handle)
        return list(legacy) if isinstance(legacy, list) else []
    return []
