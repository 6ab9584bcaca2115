"""Connected components of a graph too large for one task, in rounds of per-partition work
(no Dask here: :mod:`mmcurate.engine.global_steps` shuffles the edges between the rounds).

The alternating large-star / small-star algorithm (Kiveris, Lattanzi, Mirrokni, Rastogi,
Vassilvitskii, "Connected Components in MapReduce and Beyond", SoCC 2014): every step looks at
one node's edges at a time, so the edges can be hash-partitioned by node and each partition
processed alone; the number of edges never grows; after O(log^2 n) rounds (a handful in
practice, long chains included) every component is a star whose centre is its smallest node.

* :func:`unique_pairs` and :func:`local_stars` first turn the edges of one partition into
  stars of the components they form there (fewer edges, shorter paths);
* :func:`large_star` takes every edge in both directions, grouped by their first node;
* :func:`small_star` takes every edge as (larger node, smaller node), grouped by the larger.

Both return their new edges as (larger node, smaller node) and how many edges they changed;
when neither changes any, each edge joins a node to the smallest node of its component.
"""

from __future__ import annotations

import numpy as np

from .neardup import cluster_labels

__all__ = ["large_star", "local_stars", "small_star", "unique_pairs"]


def _unique_rows(edges: np.ndarray) -> np.ndarray:
    """The distinct rows of an (E, 2) int64 array, sorted."""
    if len(edges) < 2:
        return edges
    edges = edges[np.lexsort((edges[:, 1], edges[:, 0]))]
    keep = np.ones(len(edges), dtype=bool)
    keep[1:] = (edges[1:] != edges[:-1]).any(axis=1)
    return edges[keep]


def _starts(sorted_nodes: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts."""
    first = np.ones(len(sorted_nodes), dtype=bool)
    first[1:] = sorted_nodes[1:] != sorted_nodes[:-1]
    return np.flatnonzero(first)


def unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    """Pairs of ids as pairs of rows (ids taken modulo ``n``), each as (smaller, larger), without
    self-pairs or repeats, sorted."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2) % n
    lo, hi = pairs.min(axis=1), pairs.max(axis=1)
    apart = lo != hi
    return _unique_rows(np.stack([lo[apart], hi[apart]], axis=1))


def local_stars(pairs: np.ndarray) -> np.ndarray:
    """The components the ``pairs`` form, as edges (node, smallest node of its component) for
    every other node."""
    nodes, inverse = np.unique(pairs, return_inverse=True)
    labels = cluster_labels(len(nodes), inverse.reshape(-1, 2))
    leaf = labels != np.arange(len(nodes))
    return np.stack([nodes[leaf], nodes[labels[leaf]]], axis=1)


def large_star(edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Large-star over edges ``(u, v)`` given in both directions, all edges of each ``u``
    together: each neighbour ``v > u`` is joined to the smallest of ``u`` and its neighbours.
    Returns the new edges (larger, smaller) and how many of them differ from the old ones."""
    if not len(edges):
        return edges.reshape(0, 2), 0
    edges = edges[np.argsort(edges[:, 0], kind="stable")]
    u, v = edges[:, 0], edges[:, 1]
    starts = _starts(u)
    smallest = np.minimum(u[starts], np.minimum.reduceat(v, starts))
    m = np.repeat(smallest, np.diff(np.append(starts, len(u))))
    larger = v > u
    return _unique_rows(np.stack([v[larger], m[larger]], axis=1)), int(np.count_nonzero(m[larger] != u[larger]))


def small_star(edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Small-star over edges ``(u, v)``, ``u > v``, all edges of each ``u`` together: ``u`` and
    its (smaller) neighbours are joined to the smallest of them. Returns the new edges
    (larger, smaller) and how many nodes had more than one smaller neighbour (0: no change)."""
    edges = _unique_rows(edges)
    if not len(edges):
        return edges.reshape(0, 2), 0
    u, v = edges[:, 0], edges[:, 1]
    starts = _starts(u)
    m = np.repeat(v[starts], np.diff(np.append(starts, len(u))))  # rows sorted by (u, v): the first v is the least
    other = v != m
    out = np.concatenate([np.stack([u[starts], v[starts]], axis=1), np.stack([v[other], m[other]], axis=1)])
    return _unique_rows(out), int(len(u) - len(starts))
