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


__all__ = ["KeepTopReport", "REASON", "format_keep_top", "top_fraction"]

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


def format_keep_top(report: Mapping[str, Any]) -> str:
    """One line on one keep_top step (from a :class:`KeepTopReport` as a dict)."""
    threshold = "none" if report["threshold"] is None else f"{report['threshold']:.6g}"
    return (
        f"{report['step']}: kept the top {report['fraction']:.4g} by {report['column']}: "
        f"{report['kept']} of {report['samples_in']} (threshold {report['column']} >= {threshold})"
    )
