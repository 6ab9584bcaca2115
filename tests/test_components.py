"""Connected components in rounds of per-node work (mmcurate.steps.dedup.components) give the
components of the one-task union-find, on chains, stars and random graphs cut into partitions."""

from __future__ import annotations

import numpy as np
import pytest

from mmcurate.steps.dedup.components import large_star, local_stars, small_star, unique_pairs
from mmcurate.steps.dedup.neardup import cluster_labels
from mmcurate.steps.dedup.partition import bucket_of


def _by_node(edges: np.ndarray, parts: int) -> list[np.ndarray]:
    where = bucket_of(edges[:, 0], parts)
    return [edges[where == p] for p in range(parts)]


def components(pairs: np.ndarray, n: int, parts: int) -> tuple[np.ndarray, int]:
    """Labels (smallest row of each component) the way the engine computes them: each step on
    each partition of the edges alone; and the number of rounds."""
    stars = np.concatenate([local_stars(unique_pairs(p, n)) for p in np.array_split(pairs, parts)])
    rounds = 0
    while True:
        rounds += 1
        done = [large_star(p) for p in _by_node(np.concatenate([stars, stars[:, ::-1]]), parts)]
        stars = np.concatenate([e for e, _ in done])
        changed = sum(c for _, c in done)
        done = [small_star(p) for p in _by_node(stars, parts)]
        stars = np.concatenate([e for e, _ in done])
        if not changed and not sum(c for _, c in done):
            break
    assert (stars[:, 0] > stars[:, 1]).all() and len(np.unique(stars[:, 0])) == len(stars)  # stars: one centre per node
    labels = np.arange(n)
    labels[stars[:, 0]] = stars[:, 1]
    return labels, rounds


def _chain(order: np.ndarray) -> np.ndarray:
    return np.stack([order[:-1], order[1:]], axis=1)


rng = np.random.default_rng(0)
GRAPHS = {
    "chain in row order": (5000, _chain(np.arange(5000))),
    "chain in random order": (5000, _chain(rng.permutation(5000))),
    "big star and a cycle": (3000, np.concatenate([np.stack([np.full(1999, 1000), np.delete(np.arange(2000), 1000)], axis=1),
                                                   _chain(np.append(np.arange(2000, 3000), 2000))])),
    "random sparse": (5000, rng.integers(0, 5000, (4000, 2))),
    "ids beyond n, self-pairs and repeats": (1000, np.concatenate([rng.integers(0, 2000, (900, 2)), np.tile([[7, 1007]], (5, 1))])),
}


@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.parametrize("parts", [1, 7])
def test_star_rounds_give_the_union_find_components(name, parts):
    n, pairs = GRAPHS[name]
    labels, rounds = components(pairs, n, parts)
    assert labels.tolist() == cluster_labels(n, pairs % n).tolist()
    assert rounds <= 20  # a chain of 5000 needs rounds logarithmic in its length, not 5000


def test_unique_pairs_counts_each_pair_of_rows_once():
    pairs = np.array([[3, 1], [1, 3], [4, 4], [5, 14], [1, 13], [9, 2]])
    assert unique_pairs(pairs, 10).tolist() == [[1, 3], [2, 9], [4, 5]]
