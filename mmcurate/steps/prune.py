"""``prune: density``: density-based pruning (DBP, Abbas et al. 2024) over an embedding column.

Spherical k-means clusters the embeddings. Per cluster j: ``d_intra`` is the mean cosine
distance of its members to its centroid, ``d_inter`` the mean ``1 - cos`` from its centroid to
the :data:`NEIGHBOURS` nearest other centroids. A dense cluster of near-identical samples (small
``d_intra``) close to others (small ``d_inter``) is thinned more: ``P = softmax(d_inter *
d_intra / TEMPERATURE)`` and the quotas ``x_j`` minimise ``sum (x_j - P_j N)^2`` with
``sum x_j = N = round(keep_fraction * n)`` and ``min(0.5 N / k, n_j - 1) <= x_j <= n_j``
(:func:`quotas`, exact, in whole samples). Each cluster keeps its ``x_j`` members farthest from
its centroid (the least prototypical), ties to the earlier sample in input order.

The pure functions here run on arrays; the engine runs them per shard and per cluster.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .dedup.compute import assign_clusters, fit_centroids, unit_rows

__all__ = [
    "DensityConfig", "PruneReport", "REASON", "assign", "check_clustering", "cluster_cuts", "cluster_probabilities", "cluster_sums", "density_clusters", "fit",
    "format_prune", "inter_distances", "keep_count", "keep_farthest", "plan_quotas", "prune_density", "quotas", "threshold",
]

REASON = "pruned_dense_cluster"
TEMPERATURE = 0.5
NEIGHBOURS = 20
MAX_CLUSTERS = 500
"""The rule of thumb's cap: DBP's k for LAION-scale pools."""


def check_clustering(clusters: int, fit_sample: int) -> None:
    """The k-means settings of a step's config (``ValueError`` naming the field)."""
    if clusters < 0:
        raise ValueError(f"field 'clusters': expected 0 (a rule of thumb) or a positive number, got {clusters!r}")
    if fit_sample < 1:
        raise ValueError(f"field 'fit_sample': expected a positive integer, got {fit_sample!r}")


@dataclass(frozen=True)
class DensityConfig:
    """``column``: a fixed-size embedding column; ``clusters`` 0: :func:`density_clusters`."""

    column: str = "image_embedding"
    keep_fraction: float = 0.5
    clusters: int = 0
    seed: int = 0
    fit_sample: int = 1_000_000
    """k-means is fitted on at most this many rows (every m-th alive row)."""

    def __post_init__(self) -> None:
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"field 'keep_fraction': expected a number in (0, 1], got {self.keep_fraction!r}")
        check_clustering(self.clusters, self.fit_sample)


@dataclass
class PruneReport:
    step: str
    column: str
    keep_fraction: float
    samples_in: int
    kept: int
    clusters: int
    sizes_before: list[int] = field(default_factory=list)
    sizes_after: list[int] = field(default_factory=list)
    """Per cluster (by number, as in the drop reasons) its members before and after the step."""
    d_intra: list[float] = field(default_factory=list)
    d_inter: list[float] = field(default_factory=list)
    kind: str = "prune"


def density_clusters(n: int, clusters: int) -> int:
    """k for ``n`` rows: ``clusters``, or with 0 ``round(sqrt(n / 4))`` capped at :data:`MAX_CLUSTERS`."""
    return max(1, min(n, clusters or min(MAX_CLUSTERS, int(round(math.sqrt(n / 4))))))


def keep_count(n: int, keep_fraction: float) -> int:
    """N: ``round(keep_fraction * n)``, halves up."""
    return min(n, math.floor(keep_fraction * n + 0.5))


def fit(emb: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (unit rows) of unit rows ``emb``."""
    return unit_rows(fit_centroids(emb, min(k, len(emb)), seed=seed))


def assign(emb: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each unit row's nearest centroid and its cosine distance to it."""
    labels = assign_clusters(emb, centroids)
    return labels, (1.0 - np.einsum("ij,ij->i", emb, centroids[labels])).astype(np.float64)


def inter_distances(centroids: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Per centroid the mean ``1 - cos`` to its ``neighbours`` nearest other centroids (0 when alone)."""
    k = len(centroids)
    if k < 2:
        return np.zeros(k)
    dist = 1.0 - centroids.astype(np.float64) @ centroids.T.astype(np.float64)
    np.fill_diagonal(dist, np.inf)
    m = min(neighbours, k - 1)
    nearest = np.partition(dist, m - 1, axis=1)[:, :m]
    return nearest.mean(axis=1)


def cluster_probabilities(d_intra: np.ndarray, d_inter: np.ndarray, temperature: float = TEMPERATURE) -> np.ndarray:
    """``softmax(d_inter * d_intra / temperature)`` (empty clusters get 0)."""
    score = d_inter * d_intra / temperature
    score = np.where(np.isfinite(score), score, -np.inf)
    e = np.exp(score - np.max(score))
    return e / e.sum()


def quotas(sizes: np.ndarray, probabilities: np.ndarray, total: int) -> np.ndarray:
    """Whole ``x`` minimising ``sum (x_j - P_j N)^2`` with ``sum x = N`` and
    ``floor(min(0.5 N / k, n_j - 1)) <= x_j <= n_j``: water-filling (``x_j = clip(P_j N + lam)``,
    ``lam`` by bisection from below), floored, then the remaining units one at a time where
    they cost least (exact for a separable convex objective; ties to the lower cluster)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    k = len(sizes)
    if total > sizes.sum():
        raise ValueError(f"cannot keep {total} of {sizes.sum()} samples")
    target = np.asarray(probabilities, dtype=np.float64) * total
    low = np.floor(np.minimum(0.5 * total / k, np.maximum(sizes - 1, 0))).astype(np.int64)
    high = sizes

    def filled(lam: float) -> np.ndarray:
        return np.clip(target + lam, low, high)

    a, b = -float(total) - 1.0, float(total) + 1.0  # sum(filled(a)) = sum(low) <= N <= n = sum(filled(b))
    for _ in range(200):
        mid = (a + b) / 2
        if filled(mid).sum() <= total:
            a = mid
        else:
            b = mid
    x = np.clip(np.floor(filled(a)).astype(np.int64), low, high)
    heap = [(2.0 * (x[j] - target[j]) + 1.0, j) for j in range(k) if x[j] < high[j]]
    heapq.heapify(heap)
    for _ in range(total - int(x.sum())):
        _, j = heapq.heappop(heap)
        x[j] += 1
        if x[j] < high[j]:
            heapq.heappush(heap, (2.0 * (x[j] - target[j]) + 1.0, j))
    return x


def threshold(dist: np.ndarray, rows: np.ndarray, keep: int) -> tuple[float, int]:
    """The last kept ``(distance, row)`` of one cluster's members when its ``keep`` farthest
    stay (farther first, then the earlier row); ``(inf, -1)`` keeps none, ``(-inf, -1)`` all."""
    if keep <= 0:
        return np.inf, -1
    if keep >= len(dist):
        return -np.inf, -1
    last = np.lexsort((rows, -dist))[keep - 1]
    return float(dist[last]), int(rows[last])


def keep_farthest(dist: np.ndarray, rows: np.ndarray, cut_dist: np.ndarray, cut_row: np.ndarray) -> np.ndarray:
    """Which rows stay given their cluster's :func:`threshold` (``cut_*``: one per row)."""
    return (dist > cut_dist) | ((dist == cut_dist) & (rows <= cut_row))


def cluster_cuts(labels: np.ndarray, dist: np.ndarray, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Every cluster's :func:`threshold` (a ``(k, 2)`` array) for rows held in one place."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(x) + 1))
    cuts = [threshold(dist[order[a:b]], rows[order[a:b]], int(q)) for a, b, q in zip(bounds[:-1], bounds[1:], x)]
    return np.array(cuts, dtype=np.float64).reshape(-1, 2)


def cluster_sums(labels: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster its member count and the sum of their distances (summed over shards)."""
    return np.bincount(labels, minlength=k), np.bincount(labels, weights=dist, minlength=k)


def plan_quotas(sizes: np.ndarray, dist_sums: np.ndarray, centroids: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(quotas, d_intra, d_inter)`` from the clusters' sizes and distance sums."""
    d_intra = np.divide(dist_sums, sizes, out=np.zeros(len(sizes)), where=sizes > 0)
    d_inter = inter_distances(centroids)
    probabilities = cluster_probabilities(np.where(sizes > 0, d_intra, np.nan), d_inter)
    return quotas(sizes, probabilities, keep), d_intra, d_inter


def prune_density(values: Any, config: DensityConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole computation in one process: ``(keep mask, cluster of each row, quotas)``
    (what the engine computes distributed; for tests and ``scripts/bench_prune.py``)."""
    emb = unit_rows(values)
    n = len(emb)
    every = max(1, math.ceil(n / config.fit_sample))
    centroids = fit(emb[::every], density_clusters(n, config.clusters), config.seed)
    labels, dist = assign(emb, centroids)
    sizes, sums = cluster_sums(labels, dist, len(centroids))
    x, _, _ = plan_quotas(sizes, sums, centroids, keep_count(n, config.keep_fraction))
    rows = np.arange(n)
    cuts = cluster_cuts(labels, dist, rows, x)
    return keep_farthest(dist, rows, cuts[labels, 0], cuts[labels, 1]), labels, x


def format_prune(report: Mapping[str, Any]) -> str:
    """A few lines on one prune step: kept, and the clusters thinned most."""
    before, after = np.array(report["sizes_before"]), np.array(report["sizes_after"])
    lines = [
        f"{report['step']}: density pruning of {report['column']} in {report['clusters']} clusters kept "
        f"{report['kept']} of {report['samples_in']} (keep_fraction {report['keep_fraction']:.4g})"
    ]
    for j in np.argsort(after - before, kind="stable")[:3]:
        if before[j] > after[j]:
            lines.append(f"  cluster {j}: {before[j]} -> {after[j]}")
    return "\n".join(lines)
