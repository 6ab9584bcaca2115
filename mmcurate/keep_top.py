"""``keep_top``: keep the top fraction of all surviving samples by a column (a global step).

DataComp-style quantile thresholds ("the top 30% by CLIP score") depend on the whole
dataset, so like dedup this runs once over small columns: only keys and the one column
travel to the driver. Exactly ``round(fraction * n)`` samples stay; among equal values the
earlier sample in input order stays, so the result is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from dask.distributed import Client

from .gather import gather_columns
from .inputs import ShardRef
from .ledger import Ledger
from .plan import GlobalPlan
from .store import RunStore

__all__ = ["KeepTopReport", "REASON", "format_keep_top", "run_keep_top", "top_fraction"]

REASON = "below_top_fraction"


@dataclass
class KeepTopReport:
    step: str
    column: str
    fraction: float
    samples_in: int
    kept: int
    threshold: float | None
    """The lowest kept value (None when nothing is kept)."""


def top_fraction(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask keeping the ``round(fraction * n)`` highest values; NaN counts as lowest,
    ties go to the lower index."""
    n = len(values)
    k = min(n, math.floor(fraction * n + 0.5))
    ranked = np.lexsort((np.arange(n), -np.nan_to_num(values.astype(np.float64), nan=-np.inf)))
    keep = np.zeros(n, dtype=bool)
    keep[ranked[:k]] = True
    return keep


def run_keep_top(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: Ledger, shards: list[ShardRef], priors: Any = ()
) -> tuple[dict[str, dict[int, tuple[str, str]]], KeepTopReport]:
    """Drop every alive sample outside the top fraction; return drops per shard URL and a report.
    (``client`` and ``priors`` are unused: sorting one column is driver work, and earlier runs
    do not take part in a quantile of this one.)"""
    step = plan.step
    urls, positions, _, columns = gather_columns(store, plan, ledger, shards)
    values = np.array([np.nan if v is None else v for v in columns[step.column]], dtype=np.float64)
    keep = top_fraction(values, step.fraction)
    threshold = float(values[keep].min()) if keep.any() else None
    drops: dict[str, dict[int, tuple[str, str]]] = {}
    for row in np.flatnonzero(~keep):
        value = values[row]
        if threshold is not None and value == threshold:
            reason = f"{REASON}: {step.column} == {threshold:.6g}, a tie kept for earlier samples"
        else:
            reason = f"{REASON}: {step.column} < {threshold:.6g}" if threshold is not None else f"{REASON}: none kept"
        drops.setdefault(urls[row], {})[positions[row]] = (plan.id, reason)
    report = KeepTopReport(plan.id, step.column, step.fraction, len(positions), int(keep.sum()), threshold)
    return drops, report


def format_keep_top(report: Mapping[str, Any]) -> str:
    """One line on one keep_top step (from a :class:`KeepTopReport` as a dict)."""
    threshold = "none" if report["threshold"] is None else f"{report['threshold']:.6g}"
    return (
        f"{report['step']}: kept the top {report['fraction']:.4g} by {report['column']}: "
        f"{report['kept']} of {report['samples_in']} (threshold {report['column']} >= {threshold})"
    )
