"""Exact near-duplicate search over 64-bit perceptual hashes (Hamming distance).

Finds *every* pair of hashes within Hamming distance ``D`` -- no misses -- in sub-quadratic
time, with the block-permutation scheme of Manku, Jain & Das Sarma (WWW 2007, "Detecting
near-duplicates for web crawling"):

1. Exact duplicates first. Identical hashes are grouped (one sort); the search runs over the
   *distinct* values only, so a cluster of 10,000 copies of one image costs O(n), not O(n^2).
   Bits that are equal in every value are dropped first (they cannot tell values apart).
2. The bits are cut into ``B = D + k`` contiguous blocks. Two hashes within distance ``D``
   differ in at most ``D`` blocks, so at least ``k`` blocks are identical. For each of the
   ``C(B, k)`` choices ``S`` of ``k`` blocks ("tables") the hashes are bit-permuted so that the
   blocks of ``S`` sit on top, then sorted (``np.sort`` on the permuted values themselves: a
   permutation of bits keeps Hamming distance, so the sorted array holds the full hashes and
   candidates are checked on neighbouring entries, no index gathers). Within each run of equal
   top bits every pair is a candidate, checked with ``popcount(x ^ y) <= D``; the runs are
   walked by offset (``s[p] ^ s[p + 1]``, ``s[p] ^ s[p + 2]``, ...) over cache-sized chunks.
3. A pair agreeing in more than ``k`` blocks collides in several tables; it is kept only in the
   table whose blocks are the ``k`` lowest-numbered blocks it agrees on, so every pair comes out
   exactly once and nothing needs de-duplicating afterwards.
4. Runs of one key longer than about ``_LONG_RUN`` (distinct hashes sharing the key bits, as
   skewed real-world hashes can) are not walked pair by pair: the same search recurses on the
   run's remaining bits. A search whose tables turn out not to separate the values (work past
   twice the estimated cost of the quadratic scan) falls back to that scan, so skewed inputs
   cost at worst a small multiple of brute force, never more.

``k`` is picked from a cost model (tables x permute-sort-scan cost + expected candidates,
``n^2/2 / 2^keybits`` per table for uniform hashes) unless given. Tables run on a thread pool
(numpy's sort and bitwise ops release the GIL); each thread reuses one ``n``-value buffer.
Memory: about 4 x 8 bytes per hash while grouping exact duplicates (argsort), then 2 x 8 bytes
per distinct value plus 8 bytes per value per thread, plus the pairs found -- about 0.55 GB of
peak RSS for 10M hashes with 2 threads, input included.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from typing import Any

import numpy as np

__all__ = ["MAX_DISTANCE", "brute_force_pairs", "choose_k", "cluster_labels", "near_duplicate_pairs"]

NBITS = 64
MAX_DISTANCE = 31
"""Largest accepted ``max_distance``: beyond half the bits nearly every pair is "near" and no
index beats the quadratic scan."""

_CHUNK = 1 << 15  # elements per cache-sized chunk of the element-wise passes (256 KiB)
_LONG_RUN = 1024  # runs of equal keys longer than this are searched recursively
_MAX_TABLES = 20_000

# Cost model, seconds per unit, measured on a 2-core Xeon (AVX-512) VM with numpy 2.4 (one thread).
_C_TABLE = 1.0e-8  # per element per table (permute + sort + scan) up to 1M elements ...
_C_TABLE_GROWTH = 0.6  # ... and 60% more per tenfold beyond (sorting leaves the cache)
_C_TABLE_FIXED = 4e-5  # per table (Python overhead)
_C_CAND = 3e-9  # per candidate pair inside runs
_C_BRUTE = 2.6e-9  # per pair of the quadratic scan
_C_BRUTE_FIXED = 2e-5

_U64 = np.uint64

_HAS_COUNT = hasattr(np, "bitwise_count")
if _HAS_COUNT:  # numpy >= 2.0

    def _popcount(x: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x)

else:  # pragma: no cover - numpy 1.x
    _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.uint64)
        return _POP8[x.view(np.uint8)].reshape(x.shape + (8,)).sum(axis=-1, dtype=np.uint8)


# --------------------------------------------------------------------------- validation


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_distance(max_distance: int) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise TypeError(f"max_distance must be an int, not {type(max_distance).__name__}")
    d = int(max_distance)
    if d < 0:
        raise ValueError(f"max_distance must be >= 0, not {d}")
    if d > MAX_DISTANCE:
        raise ValueError(
            f"max_distance={d} is too large for 64-bit hashes: at most {MAX_DISTANCE} is supported "
            "(beyond half the bits almost every pair is a 'near duplicate' and the search is quadratic)"
        )
    return d


def _as_uint64(hashes: np.ndarray) -> np.ndarray:
    h = np.asarray(hashes)
    if h.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array, not shape {h.shape}")
    if h.dtype == np.uint64:
        return h
    if h.size == 0:
        return h.astype(np.uint64)
    if h.dtype.kind not in "iu":
        raise TypeError(f"hashes must be an integer array (uint64 perceptual hashes), not {h.dtype}")
    if h.dtype.itemsize == 8:  # int64 storage of a 64-bit hash: reinterpret the bits
        return h.view(np.uint64)
    return h.astype(np.uint64)


# --------------------------------------------------------------------------- planning


def _widths(nbits: int, blocks: int) -> list[int]:
    """Contiguous block widths, most significant block first, wider blocks first."""
    q, r = divmod(nbits, blocks)
    return [q + 1] * r + [q] * (blocks - r)


def _table_cost(n: int) -> float:
    """Estimated seconds of one table's permute + sort + scan over ``n`` values."""
    growth = 1.0 + _C_TABLE_GROWTH * max(0.0, math.log10(max(n, 1)) - 6.0)
    return n * _C_TABLE * growth + _C_TABLE_FIXED


def _plan_cost(n: int, d: int, k: int, nbits: int) -> float:
    """Estimated seconds (one thread) of the table search with ``k`` (``k == 0``: brute force)."""
    pairs = n * (n - 1) / 2
    if k == 0:
        return pairs * _C_BRUTE + _C_BRUTE_FIXED
    blocks = d + k
    q, r = divmod(nbits, blocks)
    tables = math.comb(blocks, k)
    # sum over tables of 2^-keybits, with r blocks of q+1 bits and blocks-r of q bits
    collide = sum(
        math.comb(r, j) * math.comb(blocks - r, k - j) * 2.0 ** -(j * (q + 1) + (k - j) * q)
        for j in range(max(0, k - (blocks - r)), min(k, r) + 1)
    )
    return tables * _table_cost(n) + pairs * collide * _C_CAND


def choose_k(n: int, max_distance: int, nbits: int = NBITS) -> int:
    """The number of identical blocks ``k`` (``B = max_distance + k`` blocks, ``C(B, k)`` tables)
    with the lowest estimated cost for ``n`` distinct hashes; 0 means the brute-force scan wins."""
    d = _check_distance(max_distance)
    best_k, best = 0, _plan_cost(n, d, 0, nbits)
    for k in range(1, nbits - d + 1):
        if math.comb(d + k, k) > _MAX_TABLES:
            break
        cost = _plan_cost(n, d, k, nbits)
        if cost < best:
            best_k, best = k, cost
    return best_k


# --------------------------------------------------------------------------- bit permutations


class _Layout:
    """Bit permutation of one table: the blocks of ``combo`` on top (in order), the rest below."""

    def __init__(self, nbits: int, widths: list[int], combo: tuple[int, ...]):
        los, hi = [], nbits
        for w in widths:
            hi -= w
            los.append(hi)
        self.nbits = nbits
        self.combo_mask = sum(1 << b for b in combo)
        self.key_bits = sum(widths[b] for b in combo)
        self.rest_bits = nbits - self.key_bits
        chosen = set(combo)
        order = list(combo) + [b for b in range(len(widths)) if b not in chosen]
        self.block_lo = [0] * len(widths)  # each block's lowest bit in the permuted layout
        segs: list[list[int]] = []  # [src_lo, width, dst_lo], adjacent blocks merged
        dst_hi, prev = nbits, None
        for b in order:
            w = widths[b]
            dst_lo = dst_hi - w
            if prev == b - 1 and segs:
                segs[-1][0] = los[b]
                segs[-1][1] += w
                segs[-1][2] = dst_lo
            else:
                segs.append([los[b], w, dst_lo])
            self.block_lo[b] = dst_lo
            dst_hi, prev = dst_lo, b
        self.block_mask = [(1 << w) - 1 for w in widths]
        self.forward = [tuple(s) for s in segs]
        self.inverse = [(dst, w, src) for src, w, dst in segs]

    def apply(self, src: np.ndarray, out: np.ndarray, tmp: np.ndarray, inverse: bool = False) -> np.ndarray:
        """Permute ``src`` into ``out`` (chunked so the passes stay in cache); ``tmp`` is scratch."""
        segs = self.inverse if inverse else self.forward
        n = len(src)
        for a in range(0, n, _CHUNK):
            b = min(n, a + _CHUNK)
            s, o, t = src[a:b], out[a:b], tmp[: b - a]
            for i, seg in enumerate(segs):
                if i == 0:
                    _segment(s, seg, self.nbits, o)
                else:
                    _segment(s, seg, self.nbits, t)
                    np.bitwise_or(o, t, out=o)
        return out

    def permute_small(self, values: np.ndarray, inverse: bool = False) -> np.ndarray:
        out = np.empty_like(values)
        return self.apply(values, out, np.empty(min(len(values), _CHUNK), np.uint64), inverse)


def _segment(src: np.ndarray, seg: tuple[int, int, int], nbits: int, out: np.ndarray) -> None:
    """``out = ((src >> src_lo) & mask(width)) << dst_lo`` with as few passes as possible.
    Values have no bits set at or above ``nbits``."""
    src_lo, w, dst_lo = seg
    if src_lo == dst_lo:
        np.bitwise_and(src, _U64(((1 << w) - 1) << src_lo), out=out)
    elif src_lo + w == nbits:  # top of the value: nothing above to mask off
        np.right_shift(src, _U64(src_lo), out=out)
        if dst_lo:
            np.left_shift(out, _U64(dst_lo), out=out)
    elif dst_lo + w == NBITS:  # lands on top of the word: the left shift drops what is above
        np.right_shift(src, _U64(src_lo), out=out)
        np.left_shift(out, _U64(dst_lo), out=out)
    elif src_lo == 0:  # bottom of the value: the left shift drops what is above
        np.left_shift(src, _U64(NBITS - w), out=out)
        np.right_shift(out, _U64(NBITS - w - dst_lo), out=out)
    else:
        np.right_shift(src, _U64(src_lo), out=out)
        np.bitwise_and(out, _U64((1 << w) - 1), out=out)
        if dst_lo:
            np.left_shift(out, _U64(dst_lo), out=out)


# --------------------------------------------------------------------------- search over distinct values


_EMPTY = np.empty(0, dtype=np.int64)


class _Buffers:
    """Per-thread scratch reused across tables (first-touching large arrays is slow)."""

    def __init__(self, n: int):
        m = min(n, _CHUNK)
        self.s = np.empty(n, dtype=np.uint64)
        self.tmp = np.empty(m, dtype=np.uint64)
        self.same = np.empty(m, dtype=bool)
        self.hit = np.empty(m, dtype=bool)
        self.pc = np.empty(m, dtype=np.uint8)


def _brute_distinct(vals: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of ``vals`` within distance ``d``: the quadratic scan, in row blocks."""
    n = len(vals)
    rows = max(1, min(1024, (1 << 16) // max(n, 1)))
    out_i, out_j = [], []
    for a in range(0, n, rows):
        b = min(n, a + rows)
        block = vals[a:b, None]
        near = np.triu(_popcount(block ^ vals[None, a:b]) <= d, 1)  # inside the row block
        ii, jj = np.nonzero(near)
        if ii.size:
            out_i.append(ii + a)
            out_j.append(jj + a)
        if b < n:  # the columns after the block
            ii, jj = np.nonzero(_popcount(block ^ vals[None, b:]) <= d)
            if ii.size:
                out_i.append(ii + a)
                out_j.append(jj + b)
    if not out_i:
        return _EMPTY, _EMPTY
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def _run_pairs(s: np.ndarray, thr: np.uint64, d: int, bufs: _Buffers,
               skip: list[tuple[int, int]]) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Pairs of positions ``p < q`` of sorted ``s`` with equal keys (``s[p] ^ s[q] < thr``: runs
    are contiguous) within distance ``d``, leaving out the runs ``[lo, hi)`` in ``skip``;
    returns (ps, qs, candidates checked).

    One pass over cache-sized chunks of ``p``, offset ``q - p = 1, 2, ...``: while many ``p`` of
    the chunk still have an equal key at ``p + off``, on contiguous slices (no gathers); once
    few are left, on their indices."""
    n = len(s)
    ps: list[np.ndarray] = []
    qs: list[np.ndarray] = []
    cand = 0
    skip_lo = np.array([lo for lo, _ in skip], dtype=np.int64)
    for a in range(0, n - 1, _CHUNK):
        size = min(n - 1, a + _CHUNK) - a
        skips = []
        if skip:
            first = max(0, int(np.searchsorted(skip_lo, a, "right")) - 1)
            skips = [(max(lo, a) - a, min(hi, a + size) - a) for lo, hi in skip[first:] if lo < a + size and hi > a]
            skips = [(lo, hi) for lo, hi in skips if hi > lo]
        off = 1
        while True:
            e = min(size, n - off - a)  # p + off <= n - 1
            if e <= 0:
                break
            x = bufs.tmp[:e]
            np.bitwise_xor(s[a + off : a + off + e], s[a : a + e], out=x)
            same = np.less(x, thr, out=bufs.same[:e])
            for lo, hi in skips:
                same[lo:hi] = False
            live = int(np.count_nonzero(same))
            if not live:
                break
            cand += live
            if live * 16 < e:  # few left: continue on their indices
                act = np.flatnonzero(same)
                near = _popcount(x[act]) <= d
                act += a
                if near.any():
                    ps.append(act[near])
                    qs.append(act[near] + off)
                off += 1
                while act.size:
                    act = act[act + off < n]
                    x = s[act + off] ^ s[act]
                    keep = x < thr
                    act, x = act[keep], x[keep]
                    cand += act.size
                    near = _popcount(x) <= d
                    if near.any():
                        ps.append(act[near])
                        qs.append(act[near] + off)
                    off += 1
                break
            pc = np.bitwise_count(x, out=bufs.pc[:e]) if _HAS_COUNT else _popcount(x)
            hit = np.less_equal(pc, d, out=bufs.hit[:e])
            if hit.any():
                hit &= same
                idx = np.flatnonzero(hit) + a
                ps.append(idx)
                qs.append(idx + off)
            off += 1
    return ps, qs, cand


def _table(vals: np.ndarray, nbits: int, d: int, widths: list[int], combo: tuple[int, ...],
           bufs: _Buffers) -> tuple[np.ndarray, np.ndarray, int]:
    """One table: pairs (indices into sorted, distinct ``vals``) that agree on the blocks of
    ``combo`` and whose ``k`` lowest agreeing blocks are exactly ``combo``."""
    n = len(vals)
    lay = _Layout(nbits, widths, combo)
    s = lay.apply(vals, bufs.s[:n], bufs.tmp)
    s.sort()
    rest = lay.rest_bits
    thr = _U64(1 << rest)
    ps: list[np.ndarray] = []
    qs: list[np.ndarray] = []
    cand = 0
    skip: list[tuple[int, int]] = []
    if n > _LONG_RUN:
        # Runs of one key longer than 1.5 x _LONG_RUN surely contain a sampled p with
        # key[p] == key[p + _LONG_RUN] (shorter ones may go either way: both are exact).
        at = np.arange(0, n - _LONG_RUN, _LONG_RUN // 2)
        at = at[(s[at] ^ s[at + _LONG_RUN]) < thr]
        if at.size:  # search these runs recursively on their remaining bits
            keys = np.unique(s[at] >> _U64(rest))
            lo = np.searchsorted(s, keys << _U64(rest), "left")
            hi = np.searchsorted(s, (keys << _U64(rest)) | (thr - _U64(1)), "right")
            for lo_, hi_ in zip(lo.tolist(), hi.tolist()):
                skip.append((lo_, hi_))
                sub = s[lo_:hi_] & (thr - _U64(1))
                a_, b_, c_ = _search(sub, rest, d, None, 1)
                cand += c_
                if a_.size:
                    ps.append(a_ + lo_)
                    qs.append(b_ + lo_)
    p2, q2, c2 = _run_pairs(s, thr, d, bufs, skip)
    ps += p2
    qs += q2
    cand += c2
    if not ps:
        return _EMPTY, _EMPTY, cand
    p = np.concatenate(ps)
    q = np.concatenate(qs)
    # keep the pair only in the table of its k lowest-numbered agreeing blocks
    x = s[p] ^ s[q]
    agree = np.zeros(len(x), dtype=np.int64)
    for blk, (lo_bit, mask) in enumerate(zip(lay.block_lo, lay.block_mask)):
        same = ((x >> _U64(lo_bit)) & _U64(mask)) == 0
        agree |= same.astype(np.int64) << blk
    first = np.zeros_like(agree)
    for _ in range(len(combo)):
        low = agree & -agree
        first |= low
        agree ^= low
    keep = first == lay.combo_mask
    vp = lay.permute_small(s[p[keep]], inverse=True)
    vq = lay.permute_small(s[q[keep]], inverse=True)
    ia = np.searchsorted(vals, vp).astype(np.int64)
    ib = np.searchsorted(vals, vq).astype(np.int64)
    return np.minimum(ia, ib), np.maximum(ia, ib), cand


def _compress(vals: np.ndarray, nbits: int) -> tuple[np.ndarray, int]:
    """Drop the bits that are the same in every value (they never differ, so distances, order
    and distinctness are kept): the search then keys on bits that carry information."""
    varying = int(np.bitwise_or.reduce(vals) ^ np.bitwise_and.reduce(vals))
    if varying == (1 << nbits) - 1:
        return vals, nbits
    segs, dst, bit = [], 0, 0
    while bit < nbits:  # runs of varying bits, packed from the bottom
        if varying >> bit & 1:
            w = 1
            while bit + w < nbits and varying >> (bit + w) & 1:
                w += 1
            segs.append((bit, w, dst))
            dst += w
            bit += w
        else:
            bit += 1
    out = np.empty_like(vals)
    tmp = np.empty(min(len(vals), _CHUNK), dtype=np.uint64)
    for a in range(0, len(vals), _CHUNK):
        b = min(len(vals), a + _CHUNK)
        o, t = out[a:b], tmp[: b - a]
        for i, seg in enumerate(segs):
            _segment(vals[a:b], seg, nbits, o if i == 0 else t)
            if i:
                np.bitwise_or(o, t, out=o)
    return out, dst


class _Budget:
    """Work spent by a table search, in estimated seconds; past ``limit`` it is abandoned for
    the brute-force scan (guards against hashes so skewed that the tables do not separate them)."""

    def __init__(self, limit: float):
        self.limit = limit
        self.spent = 0.0
        self.lock = threading.Lock()
        self.over = False

    def add(self, seconds: float) -> bool:
        with self.lock:
            self.spent += seconds
            self.over = self.over or self.spent > self.limit
            return self.over


def _search(vals: np.ndarray, nbits: int, d: int, k: int | None, threads: int,
            stats: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """All pairs ``a < b`` of sorted, distinct ``nbits``-bit ``vals`` within distance ``d``, each
    exactly once; returns (a, b, candidates checked)."""
    n = len(vals)
    if n < 2 or d == 0:  # distinct values: none are within distance 0
        if stats is not None:
            stats.update(k=0, blocks=0, tables=0, bits=nbits)
        return _EMPTY, _EMPTY, 0
    vals, nbits = _compress(vals, nbits)
    if nbits <= d:  # every pair is near
        k = 0
    elif k is None:
        k = choose_k(n, d, nbits)
    else:  # a given k, after constant bits are dropped, may need more blocks than bits
        k = min(k, nbits - d)
    if stats is not None:
        stats.update(k=k, blocks=d + k if k else 0, tables=math.comb(d + k, k) if k else 0, bits=nbits)
    if k == 0:
        a, b = _brute_distinct(vals, d)
        return a, b, n * (n - 1) // 2
    widths = _widths(nbits, d + k)
    combos = list(combinations(range(d + k), k))
    per_table = _table_cost(n)
    budget = _Budget(max(2.0 * _plan_cost(n, d, 0, nbits), 0.05))
    local = threading.local()

    def work(combo: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int] | None:
        if budget.over:
            return None
        bufs = getattr(local, "bufs", None)
        if bufs is None:
            bufs = local.bufs = _Buffers(n)
        result = _table(vals, nbits, d, widths, combo, bufs)
        budget.add(per_table + result[2] * _C_CAND)
        return result

    if threads <= 1 or len(combos) == 1:
        results = [work(c) for c in combos]
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(combos))) as pool:
            results = list(pool.map(work, combos))
    spent = sum(r[2] for r in results if r is not None)
    if budget.over:  # the tables did not separate these values: scan them instead
        if stats is not None:
            stats.update(k=0, blocks=0, tables=0, abandoned_tables=len(combos))
        a, b = _brute_distinct(vals, d)
        return a, b, spent + n * (n - 1) // 2
    found = [r for r in results if r[0].size]
    if not found:
        return _EMPTY, _EMPTY, spent
    return np.concatenate([r[0] for r in found]), np.concatenate([r[1] for r in found]), spent


# --------------------------------------------------------------------------- public API


def _sorted_pairs(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """(P, 2) int64 rows ``(min, max)``, sorted lexicographically, without repeats."""
    a = np.minimum(i, j).astype(np.int64)
    b = np.maximum(i, j).astype(np.int64)
    if n <= 1 << 32:
        packed = (a.astype(np.uint64) << _U64(32)) | b.astype(np.uint64)
        packed.sort()
        if len(packed) > 1:  # drop repeats (np.unique hashes in numpy 2.x: far slower)
            packed = packed[np.append(True, packed[1:] != packed[:-1])]
        return np.stack([(packed >> _U64(32)).astype(np.int64), (packed & _U64(0xFFFFFFFF)).astype(np.int64)], axis=1)
    out = np.unique(np.stack([a, b], axis=1), axis=0)
    return out.reshape(-1, 2)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, *, k: int | None = None,
                         threads: int | None = None, all_duplicate_pairs: bool = False,
                         stats: dict[str, Any] | None = None) -> np.ndarray:
    """Pairs of rows whose 64-bit hashes are within Hamming distance ``max_distance``; exact.

    Returns an int64 array of shape ``(P, 2)``: rows ``(i, j)``, ``i < j``, sorted
    lexicographically, no repeats, every one with ``popcount(hashes[i] ^ hashes[j]) <=
    max_distance``. Call the rows holding one hash value a *group* and its smallest row its
    *representative*. By default the result is:

    * for every two groups whose values are within the distance: the pair of their
      representatives -- complete, so with no repeated hash it is exactly every near pair;
    * for every group of ``m > 1`` identical hashes: the ``m - 1`` pairs (representative, row)
      -- a star, not all ``m (m - 1) / 2`` pairs.

    Connected components (:func:`cluster_labels`) are therefore the same as with every pair.
    With ``all_duplicate_pairs=True`` every near pair is returned (groups expanded: quadratic in
    group sizes).

    ``k``: identical blocks per table (``max_distance + k`` blocks, ``C(max_distance + k, k)``
    tables; 0 = brute force); default from :func:`choose_k`. ``threads``: worker threads over
    tables (default: the CPUs this process may use). ``stats``: if given, filled with ``distinct``, ``k``,
    ``blocks``, ``tables``, ``candidates`` (pairs checked) and ``near_pairs`` (between groups).
    Hashes may be uint64 or any integer dtype (int64 is reinterpreted bit for bit);
    ``max_distance`` must be in ``0..31``.
    """
    d = _check_distance(max_distance)
    h = _as_uint64(hashes)
    n = len(h)
    threads = max(1, int(threads if threads is not None else _cpu_count()))
    if k is not None and (isinstance(k, bool) or int(k) < 0):
        raise ValueError(f"k must be a non-negative int, not {k!r}")
    info: dict[str, Any] = {} if stats is None else stats
    if n < 2:
        info.update(distinct=n, k=0, blocks=0, tables=0, candidates=0, near_pairs=0)
        return np.empty((0, 2), dtype=np.int64)

    # 1. exact duplicates: groups of identical values, representative = smallest row
    order = np.argsort(h)
    sh = h[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sh[1:], sh[:-1], out=first[1:])
    if first.all():  # no repeated hash
        vals, rep, starts, group = sh, order, None, None
        dup_i = dup_j = _EMPTY
    else:
        starts = np.flatnonzero(first)
        vals = sh[starts]
        del sh
        rep = np.minimum.reduceat(order, starts)
        group = np.cumsum(first) - 1
        member = order != rep[group]
        dup_i, dup_j = rep[group[member]], order[member]
    del first
    info["distinct"] = len(vals)

    # 2. near pairs between distinct values
    a, b, cand = _search(vals, NBITS, d, None if k is None else int(k), threads, info)
    info.update(candidates=int(cand), near_pairs=int(len(a)))

    if all_duplicate_pairs and starts is not None:
        return _expand_groups(order, starts, n, a, b)
    i = np.concatenate([rep[a], dup_i])
    j = np.concatenate([rep[b], dup_j])
    return _sorted_pairs(i, j, n)


def _expand_groups(order: np.ndarray, starts: np.ndarray, n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every pair of rows: all pairs inside each group, and the cross product of the groups of
    each near pair ``(a, b)`` (group numbers)."""
    sizes = np.diff(np.append(starts, n))
    multi = np.flatnonzero(sizes > 1)
    # inside groups: every (x, y) of the m x m square, kept where x < y
    gi, ox, oy = _cross(sizes[multi], sizes[multi])
    keep = ox < oy
    first = starts[multi][gi[keep]]
    ii = [order[first + ox[keep]]]
    jj = [order[first + oy[keep]]]
    # between groups: the cross product of each near pair's groups
    gi, ox, oy = _cross(sizes[a], sizes[b])
    ii.append(order[starts[a][gi] + ox])
    jj.append(order[starts[b][gi] + oy])
    return _sorted_pairs(np.concatenate(ii), np.concatenate(jj), n)


def _cross(sa: np.ndarray, sb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For item ``g`` with sizes ``sa[g]``, ``sb[g]``: every (g, x, y), x < sa[g], y < sb[g]."""
    counts = (sa * sb).astype(np.int64)
    g = np.repeat(np.arange(len(counts)), counts)
    r = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    width = sb[g]
    return g, r // width, r % width


def brute_force_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Reference: every pair ``(i, j)``, ``i < j``, within ``max_distance`` (identical hashes
    included), by the O(n^2) scan in row blocks; same format as :func:`near_duplicate_pairs`
    with ``all_duplicate_pairs=True``. Fine up to a few tens of thousands of hashes."""
    d = _check_distance(max_distance)
    h = _as_uint64(hashes)
    i, j = _brute_distinct(h, d)  # distinctness is not needed by the scan itself
    return _sorted_pairs(i, j, len(h))


def cluster_labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of rows ``0..n-1`` joined by ``pairs`` (any order, self-pairs
    allowed): an int64 label per row, the smallest row index of its component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(n)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError(f"pairs hold rows outside 0..{n - 1}")
    if len(pairs) == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    count, labels = connected_components(graph, directed=True, connection="weak")
    smallest = np.full(count, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n, dtype=np.int64))
    return smallest[labels]
