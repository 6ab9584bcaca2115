"""PDQ (Meta's 256-bit perceptual hash for photos) in numpy, bit-exact with the reference.

Follows ThreatExchange's ``pdq/cpp/hashing/pdqhashing.cpp`` operation by operation, in float32
and in the same order (the running sums of its Jarosz box filter and the sums of its 64-to-16
DCT accumulate sequentially, so BLAS is not used): luma, two passes of the box filter along
rows then columns, decimation to 64x64, the quality metric, the DCT, and the bits above the
median. Luma is computed as the ``pdqhash`` Python binding does (float64, then float32).
``tests/test_pdq.py`` checks hashes and qualities against values the reference produced.

Hashes are 64 hex digits, word 15 first (the reference's ``Hash256::format``); compare two
with :func:`pdq_distance`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_QUALITY", "pdq_distance", "pdq_hash", "pdq_luma"]

MIN_QUALITY = 50
"""ThreatExchange's tooling treats hashes of lower quality as unusable for matching."""
_MIN_DIM = 5
_DCT = np.array(  # the scale factor is a float in the reference, the cosine a double
    [[float(np.float32(math.sqrt(2.0 / 64.0))) * math.cos((math.pi / 2 / 64.0) * (i + 1) * (2 * j + 1)) for j in range(64)] for i in range(16)],
    dtype=np.float32,
)


_LEVELS = np.arange(256, dtype=np.float64)
_LUMA = (_LEVELS * 0.299, _LEVELS * 0.587, _LEVELS * 0.114)
"""Each channel's float64 term of the luma, per 8-bit level (table lookups are several times
faster than converting the channels, and give the same products)."""


def pdq_luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 luma, as the ``pdqhash`` binding computes it:
    ``R * 0.299 + G * 0.587 + B * 0.114`` in float64, then rounded to float32."""
    luma = _LUMA[0][rgb[:, :, 0]]
    luma += _LUMA[1][rgb[:, :, 1]]
    luma += _LUMA[2][rgb[:, :, 2]]
    return luma.astype(np.float32)


def _box_first_axis(a: np.ndarray, window: int) -> np.ndarray:
    """The reference's ``box1DFloat`` applied to every column of ``a`` (C-contiguous, float32)."""
    length = a.shape[0]
    half = (window + 2) // 2
    out = np.empty_like(a)
    total = np.zeros(a.shape[1], np.float32)
    ri = li = oi = size = 0
    for _ in range(half - 1):
        total += a[ri]
        size += 1
        ri += 1
    for _ in range(window - half + 1):
        total += a[ri]
        size += 1
        np.divide(total, np.float32(size), out=out[oi])
        ri += 1
        oi += 1
    divisor = np.float32(size)
    for _ in range(length - window):
        total += a[ri]
        total -= a[li]
        np.divide(total, divisor, out=out[oi])
        ri += 1
        li += 1
        oi += 1
    for _ in range(half - 1):
        total -= a[li]
        size -= 1
        np.divide(total, np.float32(size), out=out[oi])
        li += 1
        oi += 1
    return out


def _window(old: int) -> int:
    return (old + 2 * 64 - 1) // (2 * 64)


def _quality(small: np.ndarray) -> int:
    down = np.trunc((small[:-1, :] - small[1:, :]) * np.float32(100) / np.float32(255)).astype(np.int64)
    across = np.trunc((small[:, :-1] - small[:, 1:]) * np.float32(100) / np.float32(255)).astype(np.int64)
    return min(int(np.abs(down).sum() + np.abs(across).sum()) // 90, 100)


def _dct16(small: np.ndarray) -> np.ndarray:
    """D · A · Dᵀ with the reference's sequential float32 sums."""
    t = np.zeros((16, 64), np.float32)
    for k in range(64):
        t += _DCT[:, k, None] * small[k, None, :]
    out = np.zeros((16, 16), np.float32)
    for k in range(64):
        out += t[:, k, None] * _DCT[None, :, k]
    return out


def pdq_hash(luma: np.ndarray) -> tuple[str, int]:
    """PDQ hash (64 hex digits) and quality (0-100) of a (H, W) float32 luma image; images
    smaller than 5 pixels a side hash to zeros with quality 0, as in the reference."""
    rows, cols = luma.shape
    if rows < _MIN_DIM or cols < _MIN_DIM:
        return "0" * 64, 0
    a = np.ascontiguousarray(luma, dtype=np.float32)
    if (rows, cols) == (64, 64):  # the reference takes a 64x64 image as it is
        small = a
    else:
        for _ in range(2):  # PDQ_NUM_JAROSZ_XY_PASSES: along rows, then along columns
            a = np.ascontiguousarray(_box_first_axis(np.ascontiguousarray(a.T), _window(cols)).T)
            a = _box_first_axis(a, _window(rows))
        ri = [int(((i + 0.5) * rows) / 64) for i in range(64)]
        ci = [int(((j + 0.5) * cols) / 64) for j in range(64)]
        small = a[np.ix_(ri, ci)]
    quality = _quality(small)
    dct = _dct16(small)
    median = np.sort(dct, axis=None)[127]  # torben(): the 128th smallest of 256
    bits = (dct > median).reshape(-1)  # bit k = row k // 16, column k % 16
    value = sum(1 << k for k in np.flatnonzero(bits).tolist())
    return f"{value:064x}", quality


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance between two PDQ hashes in hex."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
