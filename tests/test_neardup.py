"""Exact near-duplicate search over 64-bit hashes: equal to brute force, clusters, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

import mmcurate.steps.dedup.neardup as nd
from mmcurate.steps.dedup.neardup import brute_force_pairs, choose_k, cluster_labels, near_duplicate_pairs


def flip_bits(value: int, count: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, size=count, replace=False):
        value ^= 1 << int(bit)
    return value


def planted(n: int, max_distance: int, seed: int, share: float = 0.3) -> np.ndarray:
    """Random hashes, a ``share`` of them overwritten with copies of other rows at every
    distance 0..max_distance + 2 (some chained: copies of copies)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, n, dtype=np.uint64)
    targets = rng.choice(n, size=int(n * share), replace=False)
    for i, t in enumerate(targets):
        src = int(rng.integers(0, n))
        h[t] = flip_bits(int(h[src]), i % (max_distance + 3), rng)
    return h


def same_clusters(n: int, a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(cluster_labels(n, a), cluster_labels(n, b))


def check_against_brute(h: np.ndarray, d: int, **kwargs) -> np.ndarray:
    ref = brute_force_pairs(h, d)
    full = near_duplicate_pairs(h, d, all_duplicate_pairs=True, **kwargs)
    assert full.dtype == np.int64 and full.shape[1:] == (2,)
    np.testing.assert_array_equal(full, ref)
    # default: a star per group of identical hashes, every near pair between distinct values
    star = near_duplicate_pairs(h, d, **kwargs)
    assert len(star) <= len(ref)
    if len(star):
        assert (star[:, 0] < star[:, 1]).all()
        assert (np.bitwise_count(h[star[:, 0]] ^ h[star[:, 1]]) <= d).all()
        assert len(np.unique(star, axis=0)) == len(star)
        assert np.array_equal(star, star[np.lexsort((star[:, 1], star[:, 0]))])
    assert same_clusters(len(h), star, ref)
    return ref


@pytest.mark.parametrize("d", [0, 1, 2, 4, 6, 8])
def test_equal_to_brute_force_with_planted_pairs(d):
    h = planted(3000, d, seed=d)
    ref = check_against_brute(h, d)
    dist = np.bitwise_count(h[ref[:, 0]] ^ h[ref[:, 1]])
    assert set(range(d + 1)) <= set(dist.tolist())  # pairs at every distance 0..d were planted


@pytest.mark.parametrize("d,k,threads", [(2, 1, 1), (4, 1, 2), (4, 2, 1), (4, 3, 2), (6, 2, 2), (8, 4, 1), (3, 0, 1)])
def test_any_k_and_thread_count_is_exact(d, k, threads):
    h = planted(2000, d, seed=100 + d)
    stats: dict = {}
    check_against_brute(h, d, k=k, threads=threads, stats=stats)
    assert stats["k"] == k or stats.get("abandoned_tables")


def test_no_repeated_hash_gives_every_pair():
    h = np.unique(planted(2000, 4, seed=7))
    np.testing.assert_array_equal(near_duplicate_pairs(h, 4), brute_force_pairs(h, 4))


def test_group_of_identical_hashes_is_one_component_in_linear_pairs():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**64, 2000, dtype=np.uint64)
    rows = rng.choice(2000, 500, replace=False)
    h[rows] = h[rows[0]]
    before = h.copy()
    pairs = near_duplicate_pairs(h, 4)
    rep = rows.min()
    star = pairs[(pairs[:, 0] == rep) & np.isin(pairs[:, 1], rows)]
    assert len(star) == 499  # a star from the smallest row, not 500 * 499 / 2 pairs
    labels = cluster_labels(len(h), pairs)
    assert (labels[rows] == rep).all()
    assert len(np.unique(labels)) == 2000 - 499
    np.testing.assert_array_equal(h, before)  # input untouched
    assert len(near_duplicate_pairs(h, 4, all_duplicate_pairs=True)) == 500 * 499 // 2


def test_near_copy_of_duplicated_hash_joins_its_group():
    base = 0x0123456789ABCDEF
    h = np.array([base, 7, base, base ^ 0b111, 12345, base], dtype=np.uint64)
    pairs = near_duplicate_pairs(h, 3)
    np.testing.assert_array_equal(pairs, [[0, 2], [0, 3], [0, 5]])
    full = near_duplicate_pairs(h, 3, all_duplicate_pairs=True)
    np.testing.assert_array_equal(full, brute_force_pairs(h, 3))
    assert len(full) == 6
    np.testing.assert_array_equal(cluster_labels(6, pairs), [0, 1, 0, 0, 4, 0])


def test_cluster_labels_transitive_chain():
    a = 0
    b = a ^ 0b1111  # distance 4 from a
    c = b ^ (0b1111 << 8)  # distance 4 from b, 8 from a
    h = np.array([0xFFFFFFFF00000000, c, a, 0x00000000FFFF0000, b], dtype=np.uint64)
    pairs = near_duplicate_pairs(h, 4)
    np.testing.assert_array_equal(pairs, [[1, 4], [2, 4]])
    np.testing.assert_array_equal(cluster_labels(5, pairs), [0, 1, 1, 3, 1])  # a, b, c: one cluster
    # labels are the smallest row of the component, whatever the order of the pairs
    np.testing.assert_array_equal(cluster_labels(5, np.array([[4, 2], [4, 1], [3, 3]])), [0, 1, 1, 3, 1])


def test_cluster_labels_edge_cases():
    assert cluster_labels(0, np.empty((0, 2), np.int64)).shape == (0,)
    np.testing.assert_array_equal(cluster_labels(3, np.empty((0, 2), np.int64)), [0, 1, 2])
    assert cluster_labels(3, []).dtype == np.int64
    with pytest.raises(ValueError, match="outside"):
        cluster_labels(3, np.array([[0, 3]]))


def test_empty_and_single_hash():
    for h in (np.empty(0, np.uint64), np.array([42], np.uint64)):
        out = near_duplicate_pairs(h, 4)
        assert out.shape == (0, 2) and out.dtype == np.int64
        assert brute_force_pairs(h, 4).shape == (0, 2)
    np.testing.assert_array_equal(near_duplicate_pairs(np.array([5, 5], np.uint64), 0), [[0, 1]])


def test_distance_validated():
    h = np.arange(10, dtype=np.uint64)
    for bad in (32, 64, 100):
        with pytest.raises(ValueError, match="at most 31"):
            near_duplicate_pairs(h, bad)
    with pytest.raises(ValueError, match=">= 0"):
        near_duplicate_pairs(h, -1)
    with pytest.raises(TypeError):
        near_duplicate_pairs(h, 2.5)
    with pytest.raises(ValueError, match="1-D"):
        near_duplicate_pairs(h.reshape(2, 5), 2)
    with pytest.raises(TypeError):
        near_duplicate_pairs(np.ones(3, dtype=np.float64), 2)
    assert len(near_duplicate_pairs(h, 31)) == 45  # 31 is accepted (everything 4-bit is near)


def test_signed_int64_hashes_are_read_bit_for_bit():
    h = planted(1500, 4, seed=3)
    signed = h.view(np.int64)
    assert (signed < 0).any()
    np.testing.assert_array_equal(near_duplicate_pairs(signed, 4), near_duplicate_pairs(h, 4))


def test_constant_bits_and_key_collisions_stay_exact():
    """Skewed hashes: most bits constant (compressed away) or shared prefixes that make runs of
    one key far longer than _LONG_RUN (searched recursively)."""
    rng = np.random.default_rng(5)
    low = rng.integers(0, 2**16, 4000, dtype=np.uint64) | np.uint64(0xABCD << 40)
    check_against_brute(low, 4)
    prefix = (rng.integers(0, 2**32, 3000, dtype=np.uint64) & np.uint64(0xFFFFFFFF)) | np.uint64(0xDEADBEEF << 32)
    mixed = np.concatenate([prefix, rng.integers(0, 2**64, 3000, dtype=np.uint64)])
    mixed[:50] = [flip_bits(int(v), 3, rng) for v in mixed[100:150]]
    check_against_brute(mixed, 4, k=2)
    check_against_brute(mixed, 6)


def test_long_runs_recursion_with_small_threshold(monkeypatch):
    monkeypatch.setattr(nd, "_LONG_RUN", 8)
    for d in (2, 5):
        check_against_brute(planted(2500, d, seed=20 + d), d, k=1)


def test_sparse_hashes_where_brute_force_wins():
    """Hashes with 3 bits set: most pairs are near, the tables are abandoned for the scan."""
    rng = np.random.default_rng(9)
    h = np.zeros(1500, np.uint64)
    for _ in range(3):
        h |= np.uint64(1) << rng.integers(0, 64, 1500).astype(np.uint64)
    check_against_brute(h, 4, k=1)


def test_choose_k_grows_with_n_and_distance():
    assert choose_k(10, 4) == 0  # tiny inputs: the scan
    ks = [choose_k(n, 4) for n in (10**4, 10**6, 10**8)]
    assert ks == sorted(ks) and ks[-1] >= 2
    assert choose_k(10**7, 8) >= choose_k(10**7, 4)
