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


__all__ = [
    "KeepTopReport", "REASON", "Sketch", "band", "bracket", "format_keep_top", "keep_mask", "ranked_values", "sketch",
    "threshold_from_bands", "top_count", "top_fraction",
]

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


def top_count(n: int, fraction: float) -> int:
    """How many of ``n`` samples the top ``fraction`` keeps: ``round(fraction * n)``."""
    return min(n, math.floor(fraction * n + 0.5))


def ranked_values(values: np.ndarray) -> np.ndarray:
    """The values as ranked: float64, NaN as -inf."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf, posinf=np.inf, neginf=-np.inf)


def top_fraction(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask keeping the ``round(fraction * n)`` highest values; NaN counts as lowest,
    ties go to the lower index."""
    n = len(values)
    k = top_count(n, fraction)
    ranked = np.lexsort((np.arange(n), -ranked_values(values)))
    keep = np.zeros(n, dtype=bool)
    keep[ranked[:k]] = True
    return keep


# The same selection over many shards without gathering them: each shard sorts its own
# values and sends a sketch (every ``stride``-th value); the sketches bracket the k-th value
# between ``lo`` and ``hi``; each shard then sends its count above ``hi`` and its values in
# ``[lo, hi)`` (about two strides each), from which the k-th value is exact. Ties at that
# value are kept in input order: shard by shard, each shard its first ``take``.


@dataclass
class Sketch:
    """One shard's values sorted from the highest, every ``stride``-th kept (``count`` in all)."""

    count: int
    stride: int
    sample: np.ndarray


def sketch(ranked: np.ndarray, points: int) -> Sketch:
    """The sketch of one shard's ranked values."""
    desc = -np.sort(-ranked)
    stride = max(1, len(desc) // points)
    return Sketch(len(desc), stride, desc[::stride].copy())


def bracket(sketches: list[Sketch], k: int) -> tuple[float, float | None]:
    """``(lo, hi)`` with at least ``k`` values ``>= lo`` and fewer than ``k`` values ``>= hi``
    (``hi`` None: no upper bound), for ``1 <= k <= total count``."""
    candidates = np.unique(np.concatenate([s.sample for s in sketches] + [np.empty(0)]))  # ascending

    def bounds(v: float) -> tuple[int, int]:
        """At least / at most how many values are ``>= v``."""
        low = high = 0
        for s in sketches:
            at_least = int(np.searchsorted(-s.sample, -v, "right"))  # sample[j] >= v for j < at_least
            low += min(s.count, (at_least - 1) * s.stride + 1) if at_least else 0
            high += min(s.count, at_least * s.stride)
        return low, high

    # both bounds fall as v rises: binary search for the highest lo and the lowest hi
    a, b = 0, len(candidates)  # lo: the last index with low >= k
    while a < b:
        mid = (a + b) // 2
        a, b = (mid + 1, b) if bounds(candidates[mid])[0] >= k else (a, mid)
    lo = float(candidates[a - 1]) if a else -np.inf
    a, b = 0, len(candidates)  # hi: the first index with high < k
    while a < b:
        mid = (a + b) // 2
        a, b = (a, mid) if bounds(candidates[mid])[1] < k else (mid + 1, b)
    return lo, float(candidates[a]) if a < len(candidates) else None


def band(ranked: np.ndarray, lo: float, hi: float | None) -> tuple[int, np.ndarray]:
    """One shard's count of values ``>= hi`` and its values in ``[lo, hi)``."""
    above = 0 if hi is None else int(np.count_nonzero(ranked >= hi))
    inside = ranked[(ranked >= lo) & (True if hi is None else ranked < hi)]
    return above, inside


def threshold_from_bands(bands: list[tuple[int, np.ndarray]], k: int) -> tuple[float, list[int]]:
    """The k-th highest value ``t`` and, per shard, how many of its values equal to ``t`` stay."""
    above = sum(a for a, _ in bands)
    inside = np.sort(np.concatenate([b for _, b in bands] + [np.empty(0)]))[::-1]
    t = float(inside[k - above - 1])
    left = k - above - int(np.count_nonzero(inside > t))
    takes = []
    for _, b in bands:
        takes.append(min(left, int(np.count_nonzero(b == t))))
        left -= takes[-1]
    return t, takes


def keep_mask(ranked: np.ndarray, threshold: float | None, take: int) -> np.ndarray:
    """One shard's kept values: above ``threshold``, and its first ``take`` equal to it."""
    if threshold is None:
        return np.zeros(len(ranked), dtype=bool)
    tie = ranked == threshold
    return (ranked > threshold) | (tie & (np.cumsum(tie) <= take))


def format_keep_top(report: Mapping[str, Any]) -> str:
    """One line on one keep_top step (from a :class:`KeepTopReport` as a dict)."""
    threshold = "none" if report["threshold"] is None else f"{report['threshold']:.6g}"
    return (
        f"{report['step']}: kept the top {report['fraction']:.4g} by {report['column']}: "
        f"{report['kept']} of {report['samples_in']} (threshold {report['column']} >= {threshold})"
    )
