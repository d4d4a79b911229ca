"""The Pareto front plot of a multi-objective run: every ok trial on its first two losses, the front marked."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_sparktune.tuning.records import TrialRecord

log = logging.getLogger(__name__)


def front_plot(
    records: Sequence[TrialRecord], front: Sequence[TrialRecord], directions: Mapping[str, str]
) -> Any:
    """None without matplotlib (the ``plot`` extra). Drawn without pyplot: no GUI backend needed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.info(
            "matplotlib is not installed: no pareto_front.png (pip install 'airflow-provider-sparktune[plot]')"
        )
        return None
    x_name, y_name = list(directions)[:2]
    ok = [r for r in records if r.status == "ok" and x_name in r.losses and y_name in r.losses]
    figure = Figure(figsize=(6, 5), dpi=100)
    axes = figure.add_subplot()
    axes.scatter([r.losses[x_name] for r in ok], [r.losses[y_name] for r in ok], s=14, label="trial")
    on_front = sorted(front, key=lambda r: r.losses[x_name])
    axes.plot(
        [r.losses[x_name] for r in on_front],
        [r.losses[y_name] for r in on_front],
        "o-",
        color="tab:red",
        label="Pareto front",
    )
    axes.set_xlabel(f"{x_name} ({directions[x_name]})")
    axes.set_ylabel(f"{y_name} ({directions[y_name]})")
    axes.set_title(
        "Pareto front" + (f" (first two of {len(directions)} losses)" if len(directions) > 2 else "")
    )
    axes.legend(loc="best")
    figure.tight_layout()
    return figure
