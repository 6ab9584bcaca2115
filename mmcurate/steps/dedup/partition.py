"""Pieces of a dedup step that run on one partition of the rows (no Dask here).

Rows are numbered globally: an earlier run's rows (``--against``) first, then the alive
samples of every shard in input order. Each function sees some of the rows with their global
numbers and gives, for each, the row it duplicates (itself when it stays) and its cluster's
size; clusters never cross partitions, so the results equal the single-task ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .compute import DedupArrays, find_parents
from .neardup import _EMPTY, _MAX_TABLES, _Buffers, _Layout, _plan_cost, _table, _widths

__all__ = [
    "RowResults", "band_edges", "band_of", "bucket_of", "choose_band_k", "cluster_sizes", "exact_groups",
    "parents_in_partition", "results_from_labels",
]


@dataclass
class RowResults:
    """For rows ``row``: the row each duplicates (``parent``, itself when it stays) and the
    number of rows in its cluster."""

    row: np.ndarray
    parent: np.ndarray
    size: np.ndarray


def bucket_of(values: Any, parts: int) -> np.ndarray:
    """A partition number in ``0..parts-1`` per value, the same in every process (equal values,
    equal numbers)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        x = values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return ((x >> np.uint64(33)) % np.uint64(parts)).astype(np.int64)
    return np.array(
        [int.from_bytes(hashlib.blake2b(repr(v).encode(), digest_size=8).digest(), "little") % parts for v in values],
        dtype=np.int64,
    )


def cluster_sizes(parent: np.ndarray) -> np.ndarray:
    """For each row, how many rows share its parent (its cluster's size)."""
    _, inverse, counts = np.unique(parent, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.int64)


def parents_in_partition(method: str, config: Any, rows: np.ndarray, arrays: DedupArrays) -> tuple[RowResults, dict[str, Any]]:
    """:func:`find_parents` over the rows of one partition (``rows``: their global numbers,
    in any order); the partition must hold whole clusters."""
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    local = DedupArrays(
        values=[arrays.values[i] for i in order] if isinstance(arrays.values, list) else arrays.values[order],
        extra={k: e[order] for k, e in arrays.extra.items()},
        score=arrays.score[order],
        prior=arrays.prior[order],
    )
    outcome = find_parents(method, config, local)
    parent = rows[outcome.parent]
    return RowResults(rows, parent, cluster_sizes(parent)), outcome.stats


def results_from_labels(rows: np.ndarray, labels: np.ndarray, score: np.ndarray, prior: np.ndarray) -> RowResults:
    """Who stays in each component (``labels``, any number per component) by the keep policy:
    prior rows, then the higher score, then the earlier row; prior rows always stay."""
    order = np.lexsort((rows, -score, ~prior, labels))
    first = np.ones(len(rows), dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of = np.repeat(rows[order][first], np.diff(np.append(np.flatnonzero(first), len(rows))))
    parent = np.empty(len(rows), dtype=np.int64)
    parent[order] = keeper_of
    parent[prior] = rows[prior]
    return RowResults(rows, parent, cluster_sizes(parent))


def exact_groups(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identical hashes of one partition: (distinct values, the smallest id of each, star
    edges (representative, id) of every other id as a (P, 2) array)."""
    order = np.lexsort((ids, values))
    v, i = values[order], ids[order]
    first = np.ones(len(v), dtype=bool)
    first[1:] = v[1:] != v[:-1]
    rep = np.repeat(i[first], np.diff(np.append(np.flatnonzero(first), len(v))))
    edges = np.stack([rep[~first], i[~first]], axis=1)
    return v[first], i[first], edges


_C_SHUFFLE = 2e-7
"""Seconds per hash per table sent through the band shuffle (cut, pickle, move, join)."""


def choose_band_k(n: int, d: int) -> int:
    """Identical blocks per table for the partitioned search of ``n`` distinct hashes: as in
    :func:`~.neardup.choose_k`, but every table also costs a shuffle of all the hashes, so
    fewer tables win."""
    best_k, best = 1, math.inf
    for k in range(1, 64 - d + 1):
        tables = math.comb(d + k, k)
        if tables > _MAX_TABLES:
            break
        cost = tables * n * _C_SHUFFLE + _plan_cost(n, d, k, 64)
        if cost < best:
            best_k, best = k, cost
    return best_k


def band_of(values: np.ndarray, layout: _Layout, band_bits: int) -> np.ndarray:
    """The band (top ``band_bits`` bits of the table's permuted hash) of each value: values in
    different bands differ in the table's key blocks, so each band is searched alone."""
    permuted = layout.permute_small(np.ascontiguousarray(values, dtype=np.uint64))
    return (permuted >> np.uint64(64 - band_bits)).astype(np.int64) if band_bits else np.zeros(len(values), np.int64)


def band_edges(values: np.ndarray, ids: np.ndarray, d: int, blocks: int, combo: tuple[int, ...]) -> np.ndarray:
    """(rep id, rep id) of every pair of distinct ``values`` of one band of table ``combo``
    within distance ``d`` whose ``k`` lowest agreeing blocks are ``combo`` (so over all tables
    and bands each near pair comes out once)."""
    if len(values) < 2:
        return np.empty((0, 2), np.int64)
    order = np.argsort(values)
    vals, ids = values[order], ids[order]
    a, b, _ = _table(vals, 64, d, _widths(64, blocks), combo, _Buffers(len(vals)))
    if a is _EMPTY or not len(a):
        return np.empty((0, 2), np.int64)
    return np.stack([ids[a], ids[b]], axis=1)
