"""``target``: keep the samples near a reference set (DataComp's image-based filter).

The pool's embeddings are clustered by spherical k-means; each reference item (an earlier
run's kept samples, or reference shards, embedded by the same annotate step) picks its nearest
pool centroid, and a pool sample stays when its own nearest centroid was picked by at least one
reference item.
DataComp clusters its pools into 100,000 clusters and uses ImageNet's training images as the
reference; ``clusters: 0`` takes ``round(n / 128)`` (DataComp's small pool: 12.8M samples in
100,000 clusters), at most 100,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .dedup.compute import unit_rows
from .prune import assign, check_clustering, fit

__all__ = ["REASON", "TargetConfig", "TargetReport", "format_target", "target_clusters", "target_keep", "target_labels"]

REASON = "off_target"
MAX_CLUSTERS = 100_000
SAMPLES_PER_CLUSTER = 128


@dataclass(frozen=True)
class TargetConfig:
    """``reference``: earlier run directories whose kept samples hold the same ``column``, or
    shards (paths, globs, URLs) that the annotate step computing ``column`` embeds once into
    ``OUT/reference/``."""

    reference: tuple[str, ...] = ()
    clusters: int = 0
    seed: int = 0
    fit_sample: int = 1_000_000
    """k-means is fitted on at most this many pool rows (every m-th alive row)."""

    def __post_init__(self) -> None:
        check_clustering(self.clusters, self.fit_sample)


@dataclass
class TargetReport:
    step: str
    column: str
    samples_in: int
    kept: int
    clusters: int
    target_clusters: int
    """Pool clusters nearest to some reference item."""
    reference_items: int
    kind: str = "target"


def target_clusters(n: int, clusters: int) -> int:
    """k for ``n`` pool rows: ``clusters``, or with 0 ``round(n / 128)`` within 1 and 100,000."""
    return max(1, min(n, clusters or min(MAX_CLUSTERS, int(round(n / SAMPLES_PER_CLUSTER)))))


def target_labels(reference: Any, centroids: np.ndarray) -> np.ndarray:
    """The distinct pool clusters nearest to the reference items."""
    if not len(reference):
        return np.empty(0, dtype=np.int64)
    emb = unit_rows(reference)
    if emb.shape[1] != centroids.shape[1]:
        raise ValueError(f"the reference embeddings have {emb.shape[1]} dimensions and the pool's {centroids.shape[1]}: embed both with the same annotate step")
    return np.unique(assign(emb, centroids)[0])


def target_keep(values: Any, reference: Any, config: TargetConfig) -> np.ndarray:
    """The whole computation in one process: which pool rows stay (for tests)."""
    emb = unit_rows(values)
    every = max(1, math.ceil(len(emb) / config.fit_sample))
    centroids = fit(emb[::every], target_clusters(len(emb), config.clusters), config.seed)
    return np.isin(assign(emb, centroids)[0], target_labels(reference, centroids))


def format_target(report: Mapping[str, Any]) -> str:
    """One line on one target step (a :class:`TargetReport` as a dict)."""
    return (
        f"{report['step']}: kept {report['kept']} of {report['samples_in']} samples in the {report['target_clusters']} of "
        f"{report['clusters']} {report['column']} clusters nearest to {report['reference_items']} reference item(s)"
    )
