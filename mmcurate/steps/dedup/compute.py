"""Array-level dedup, run as one Dask task: values in, for each row the row it duplicates.

Rows from an earlier run (``--against``) come marked ``prior``: they always win their
cluster and are never dropped, so new samples are deduplicated against the kept set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ExactConfig, NearConfig, SemanticConfig, VideoNearConfig

__all__ = [
    "DedupArrays", "DedupOutcome", "assign_clusters", "dedup_arrays", "find_parents", "fit_centroids", "semantic_clusters",
    "semantic_greedy", "semantic_parents", "unit_rows",
]


@dataclass
class DedupArrays:
    """What travels to the dedup task: the compared values, keep scores, and prior flags."""

    values: Any  # hashables (exact), uint64 (n,) (phash), float32 (n, d) (semantic), uint64 arrays (video_phash)
    extra: dict[str, Any]
    """phash: more hashes per row, one uint64 (n,) array per kind (mirrored, each turn, each
    region), by kind name; a row matches another when its hash or one kind of its hashes is near the other's
    hash or the same kind of the other's hashes (never two different kinds: no turned-mirrored).
    video_phash: ``<column>_turns``, an (n,) object array of uint64 arrays (each video's frames
    turned by quarter turns)."""
    score: np.ndarray  # higher is kept first; zeros for keep: first
    prior: np.ndarray  # bool


@dataclass
class DedupOutcome:
    parent: np.ndarray
    """For each row, the row it is a duplicate of (itself when it stays)."""
    stats: dict[str, Any] = field(default_factory=dict)


def _policy_order(rows: np.ndarray, arrays: DedupArrays) -> np.ndarray:
    """``rows`` sorted by who stays first: prior rows, then higher score, then input order."""
    return rows[np.lexsort((rows, -arrays.score[rows], ~arrays.prior[rows]))]


def _parents_from_labels(labels: np.ndarray, arrays: DedupArrays) -> np.ndarray:
    n = len(labels)
    index = np.arange(n)
    order = np.lexsort((index, -arrays.score, ~arrays.prior, labels))
    first_of_label = np.ones(n, dtype=bool)
    first_of_label[1:] = labels[order][1:] != labels[order][:-1]
    keeper = np.empty(n, dtype=np.int64)
    keeper[labels[order][first_of_label]] = order[first_of_label]
    return keeper[labels]


def _exact_labels(values: list[Any]) -> np.ndarray:
    first: dict[Any, int] = {}
    return np.array([first.setdefault(v, i) for i, v in enumerate(values)], dtype=np.int64)


def _near_labels(arrays: DedupArrays, max_distance: int) -> tuple[np.ndarray, dict[str, Any]]:
    from .neardup import cluster_labels, near_duplicate_pairs

    hashes = np.asarray(arrays.values, dtype=np.uint64)
    n = len(hashes)
    found = [near_duplicate_pairs(hashes, max_distance)]
    for extra in arrays.extra.values():  # rows' extra hashes of one kind against the hashes and each other
        both = near_duplicate_pairs(np.concatenate([hashes, extra.astype(np.uint64)]), max_distance) % n
        found.append(both[both[:, 0] != both[:, 1]])
    pairs = np.unique(np.sort(np.concatenate(found), axis=1), axis=0)
    return cluster_labels(n, pairs), {"pairs_within_distance": int(len(pairs))}


def _versions(arrays: DedupArrays) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each video's distinct frame hashes, then, with turns, those of its frames turned by each
    quarter turn: (hash lists, the video of each list, its turn: 0 for the frames as shown)."""
    lists = [np.unique(np.asarray(v, dtype=np.uint64)) for v in arrays.values]
    video, turn = list(range(len(lists))), [0] * len(lists)
    for turned in arrays.extra.values():
        for i, (v, t) in enumerate(zip(arrays.values, turned)):
            t = np.asarray(t, dtype=np.uint64)
            if len(v) and len(t) == 3 * len(v):
                lists += [np.unique(part) for part in t.reshape(3, len(v))]
                video += [i] * 3
                turn += [1, 2, 3]
    return lists, np.asarray(video, dtype=np.int64), np.asarray(turn, dtype=np.int64)


def _video_labels(arrays: DedupArrays, config: VideoNearConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Videos linked when most distinct frame hashes of one have a near hash in the other (or,
    with turns, in the other's frames turned by one quarter turn), then clustered. A hash held
    by more than ``config.max_hash_videos`` videos (an intro, a black frame) is left out of the
    search: it cannot tell videos apart and would cost ``m^2`` pairs; it still counts in its
    videos' number of hashes. Every other near pair of frames is expanded; repeated hashes
    within one video count once."""
    from .neardup import cluster_labels, near_duplicate_pairs

    n = len(arrays.values)
    lists, video_of, turn_of = _versions(arrays)
    counts = np.array([len(v) for v in lists], dtype=np.int64)
    owner = np.repeat(np.arange(len(lists), dtype=np.int64), counts)  # a version: a video as shown or turned
    flat = np.concatenate(lists) if lists else np.empty(0, np.uint64)
    _, inverse, videos = np.unique(flat, return_inverse=True, return_counts=True)
    common = videos[inverse.reshape(-1)] > config.max_hash_videos
    flat, owner = flat[~common], owner[~common]
    frames = near_duplicate_pairs(flat, config.max_distance, all_duplicate_pairs=True)
    x, y = owner[frames[:, 0]], owner[frames[:, 1]]
    # two different videos, one of them as shown (turning both is the same as turning neither)
    across = (video_of[x] != video_of[y]) & ((turn_of[x] == 0) | (turn_of[y] == 0))
    # (video, other video, frame of video) for both directions; distinct rows count matches.
    rows = np.concatenate(
        [np.stack([x, y, frames[:, 0]], axis=1)[across], np.stack([y, x, frames[:, 1]], axis=1)[across]]
    )
    matched = np.unique(rows, axis=0)[:, :2]
    ordered, hits = np.unique(matched, axis=0, return_counts=True)
    enough = hits >= config.min_shared * counts[ordered[:, 0]]
    pairs = np.unique(np.sort(video_of[ordered[enough]], axis=1), axis=0).reshape(-1, 2)
    stats = {
        "frame_pairs_within_distance": int(across.sum()),
        "video_pairs": int(len(pairs)),
        "max_hash_videos": config.max_hash_videos,
        "hashes_ignored": int(np.count_nonzero(videos > config.max_hash_videos)),
    }
    return cluster_labels(n, pairs), stats


def unit_rows(values: Any) -> np.ndarray:
    """Embeddings as float32 rows of length 1 (a zero row stays zero)."""
    emb = np.array(values, dtype=np.float32, copy=True).reshape(len(values), -1)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def semantic_clusters(n: int, config: SemanticConfig) -> int:
    """The number of k-means clusters for ``n`` rows."""
    return min(n, config.clusters or max(1, int(round(np.sqrt(n / 4)))))


def fit_centroids(emb: np.ndarray, k: int, seed: int = 1234) -> np.ndarray:
    """Spherical k-means centroids (k, d) of unit rows ``emb`` (faiss, fixed ``seed``)."""
    import faiss

    kmeans = faiss.Kmeans(emb.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.cp.min_points_per_centroid = 1
    kmeans.train(emb)
    return kmeans.centroids


def assign_clusters(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid (L2, as k-means assigns) of each row."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index.search(emb, 1)[1][:, 0].astype(np.int64)


def semantic_greedy(emb: np.ndarray, arrays: DedupArrays, rows: np.ndarray, eps: float, parent: np.ndarray) -> None:
    """In one k-means cluster (``rows``): walk its rows in keep-policy order; a row whose cosine
    similarity to a kept row is >= 1 - eps (and not prior) points ``parent`` at the most similar."""
    kept: list[int] = []
    for row in _policy_order(rows, arrays):
        if kept:
            sims = emb[kept] @ emb[row]
            best = int(np.argmax(sims))
            if sims[best] >= 1.0 - eps and not arrays.prior[row]:
                parent[row] = kept[best]
                continue
        kept.append(int(row))


def semantic_parents(emb: np.ndarray, arrays: DedupArrays, assign: np.ndarray, config: SemanticConfig) -> DedupOutcome:
    """Parents of unit rows ``emb`` clustered by ``assign``, and how many rows each of
    ``config.report_eps`` would remove."""
    n = len(emb)
    order = np.argsort(assign, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(assign[order])) + 1) if n else []

    def greedy(eps: float) -> np.ndarray:
        result = np.arange(n, dtype=np.int64)
        for rows in groups:
            semantic_greedy(emb, arrays, rows, eps, result)
        return result

    removed = {str(e): int((greedy(e) != np.arange(n)).sum()) for e in config.report_eps}
    return DedupOutcome(greedy(config.eps), {"removed_by_eps": removed})


def _semantic(arrays: DedupArrays, config: SemanticConfig) -> DedupOutcome:
    n = len(arrays.values)
    if n == 0:
        return DedupOutcome(np.arange(0, dtype=np.int64), {"clusters": 0, "removed_by_eps": {}})
    emb = unit_rows(arrays.values)
    k = semantic_clusters(n, config)
    outcome = semantic_parents(emb, arrays, assign_clusters(emb, fit_centroids(emb, k)), config)
    outcome.stats = {"clusters": k, **outcome.stats}
    return outcome


def find_parents(method: str, config: Any, arrays: DedupArrays) -> DedupOutcome:
    """Cluster the rows by ``method`` and pick who stays; see :class:`DedupOutcome`."""
    if isinstance(config, SemanticConfig):
        return _semantic(arrays, config)
    if isinstance(config, NearConfig):
        labels, stats = _near_labels(arrays, config.max_distance)
    elif isinstance(config, VideoNearConfig):
        labels, stats = _video_labels(arrays, config)
    elif isinstance(config, ExactConfig):
        labels, stats = _exact_labels(list(arrays.values)), {}
    else:
        raise ValueError(f"unknown dedup method {method!r}")
    parent = _parents_from_labels(labels, arrays)
    # Prior rows are the kept set of an earlier run: never dropped, even among themselves.
    parent[arrays.prior] = np.flatnonzero(arrays.prior)
    return DedupOutcome(parent, stats)


def dedup_arrays(step: Any, columns: dict[str, list[Any]], prior: np.ndarray) -> DedupArrays:
    """The arrays ``find_parents`` takes, from a dedup step's gathered ``columns`` (``prior``
    marks rows of earlier runs, which always win)."""
    config = step.config
    keep = step.keep
    n = len(prior)
    if keep.column is None:
        score = np.zeros(n)
    elif keep.column == "resolution":
        score = np.asarray(columns["width"], dtype=np.float64) * np.asarray(columns["height"], dtype=np.float64)
    else:
        score = np.asarray([np.nan if v is None else v for v in columns[keep.column]], dtype=np.float64)
    score = np.nan_to_num(score if keep.kind != "lowest" else -score, nan=-np.inf)
    values = columns[config.column]
    if step.method == "phash":
        values = np.asarray(values, dtype=np.uint64)
    elif step.method == "semantic":
        values = np.asarray(values, dtype=np.float32)
    elif step.method == "video_phash":
        values = [np.asarray(v or [], dtype=np.uint64) for v in values]
        return DedupArrays(values=values, extra={col: _hash_lists(columns[col]) for col in config.extra_columns}, score=score, prior=prior)
    return DedupArrays(values=values, extra=_extra_hashes(config, columns), score=score, prior=prior)


def _hash_lists(lists: list[Any]) -> np.ndarray:
    """(n,) object array of uint64 arrays (taken and joined by row like the other arrays)."""
    out = np.empty(len(lists), dtype=object)
    for i, v in enumerate(lists):
        out[i] = np.asarray(v or [], dtype=np.uint64)
    return out


def _extra_hashes(config: Any, columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """One (n,) uint64 array per kind of extra hash a phash step searches, by kind name:
    ``<column>_mirror`` holds one per row; ``<column>_variants`` and ``<column>_regions`` a list
    per row, one kind per position (``<column>_variants:2``; a row with a shorter list, from an
    earlier run, repeats its plain hash)."""
    kinds: dict[str, np.ndarray] = {}
    for col in getattr(config, "extra_columns", []):
        if col.endswith("_mirror"):
            kinds[col] = np.asarray(columns[col], dtype=np.uint64)
            continue
        lists = columns[col]
        width = max((len(v) for v in lists if v), default=0)
        table = np.repeat(np.asarray(columns[config.column], dtype=np.uint64)[:, None], width, axis=1)
        for row, v in enumerate(lists):
            if v:
                table[row, : len(v)] = v
        kinds.update((f"{col}:{j}", kind) for j, kind in enumerate(table.T))
    return kinds
