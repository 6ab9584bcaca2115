"""Batched 64-bit perceptual hashes, bit-identical to ``imagehash.phash`` / ``imagehash.dhash``.

A hash is returned as a ``numpy.uint64`` equal to ``int(str(imagehash.phash(img)), 16)``:
the 8x8 bit matrix read row-major, first bit most significant.

Only the conversion to grayscale and the LANCZOS downscale are done image by image (with
Pillow, exactly as imagehash does them); the DCTs, medians, comparisons and bit packing run
over the ``(N, h, w)`` stack at once (in blocks of 256 images).

Mirrored hashes (``mirror=True``) flip the small grayscale thumbnail instead of the full
image. That equals hashing ``ImageOps.mirror(img)`` because the grayscale conversion is
per pixel and Pillow's LANCZOS weights are mirror-symmetric: for the 32- and 9-pixel output
widths used here its fixed-point coefficient matrices were checked to be exactly symmetric
for every source width from 1 to 8,000 px, and ``tests/test_phash.py`` compares against
imagehash on mirrored images.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "DHASH_SIZE",
    "REGIONS",
    "border_box",
    "PHASH_SIZE",
    "dhash_batch",
    "dhash_pixels",
    "hamming",
    "phash_batch",
    "phash_pixels",
    "robust_phashes",
    "robust_thumbnails",
    "thumbnail",
    "thumbnails",
]

HASH_SIZE = 8
PHASH_SIZE = (HASH_SIZE * 4, HASH_SIZE * 4)
"""(width, height) imagehash.phash resizes to (``highfreq_factor`` 4)."""
DHASH_SIZE = (HASH_SIZE + 1, HASH_SIZE)
"""(width, height) imagehash.dhash resizes to."""

_LANCZOS = Image.Resampling.LANCZOS


def thumbnail(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``img`` as imagehash prepares it: grayscale ("L"), LANCZOS-resized to ``size`` (w, h); uint8 (h, w)."""
    gray = img if img.mode == "L" else img.convert("L")
    return np.asarray(gray.resize(size, _LANCZOS))


def thumbnails(images: Sequence[Image.Image], size: tuple[int, int]) -> np.ndarray:
    """:func:`thumbnail` of each image, stacked: uint8 (N, h, w)."""
    out = np.empty((len(images), size[1], size[0]), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = thumbnail(img, size)
    return out


def _pack(bits: np.ndarray) -> np.ndarray:
    """(N, 8, 8) booleans -> (N,) uint64, row-major, first bit most significant."""
    packed = np.packbits(bits.reshape(len(bits), HASH_SIZE * HASH_SIZE), axis=1)  # (N, 8) uint8
    return packed.view(">u8").reshape(len(bits)).astype(np.uint64)


def phash_pixels(pixels: np.ndarray, exact: bool = True) -> np.ndarray:
    """pHash of a (N, 32, 32) stack of grayscale thumbnails (see :func:`thumbnails`).

    ``exact=False`` computes the DCT as two matrix products instead of scipy's transform:
    several times faster and equal up to float rounding, so a coefficient within rounding of
    the median may flip its bit (the fast hashing mode is not bit-identical anyway)."""
    stack = np.asarray(pixels)
    if stack.ndim != 3 or stack.shape[1:] != (PHASH_SIZE[1], PHASH_SIZE[0]):
        raise ValueError(f"expected shape (N, {PHASH_SIZE[1]}, {PHASH_SIZE[0]}), got {stack.shape}")
    if not exact:
        return _phash_matmul(stack)
    out = np.empty(len(stack), dtype=np.uint64)
    # Blocks keep the float64 temporaries in cache (one call over 10,000 images was 3x slower).
    for start in range(0, len(stack), _BLOCK):
        out[start : start + _BLOCK] = _phash_block(stack[start : start + _BLOCK])
    return out


_BLOCK = 256


def _phash_block(pixels: np.ndarray) -> np.ndarray:
    import scipy.fftpack  # imported on first use: only hashing steps need scipy

    # As imagehash: DCT along each column (its axis 0) of the float64 pixels, then along each
    # row (axis 1). Each 1-D transform is independent, so the second one runs on the 8 rows kept.
    columns = scipy.fftpack.dct(pixels.astype(np.float64), axis=1, overwrite_x=True)
    low = scipy.fftpack.dct(columns[:, :HASH_SIZE, :], axis=2, overwrite_x=True)[:, :, :HASH_SIZE]
    median = np.median(low.reshape(len(low), HASH_SIZE * HASH_SIZE), axis=1)
    return _pack(low > median[:, None, None])


@functools.lru_cache(maxsize=1)
def _dct_rows() -> np.ndarray:
    """(8, 32) float64: the first 8 rows of the unnormalised DCT-II on 32 points, as scipy's
    ``dct(x)[:8] == _dct_rows() @ x``."""
    n = PHASH_SIZE[0]
    k, x = np.arange(HASH_SIZE)[:, None], np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * x + 1) / (2 * n))


def _phash_matmul(pixels: np.ndarray) -> np.ndarray:
    return _bits(_dct_low(pixels.astype(np.float64)))


def _dct_low(pixels: np.ndarray) -> np.ndarray:
    """(..., 32, 32) pixels -> (..., 8, 8) lowest DCT-II coefficients, vertical frequency first
    (as imagehash's ``dct(dct(pixels, axis=0), axis=1)[:8, :8]``): two matrix products."""
    dct = _dct_rows().astype(pixels.dtype)
    return dct @ pixels @ dct.T


def _bits(low: np.ndarray) -> np.ndarray:
    """(N, 8, 8) DCT coefficients -> (N,) uint64 pHashes: each bit says a coefficient is above
    the median of the 64 (imagehash's rule)."""
    flat = low.reshape(len(low), HASH_SIZE * HASH_SIZE)
    return _pack(flat > np.median(flat, axis=1)[:, None])


def dhash_pixels(pixels: np.ndarray) -> np.ndarray:
    """dHash of a (N, 8, 9) stack of grayscale thumbnails (see :func:`thumbnails`)."""
    stack = np.asarray(pixels)
    if stack.ndim != 3 or stack.shape[1:] != (DHASH_SIZE[1], DHASH_SIZE[0]):
        raise ValueError(f"expected shape (N, {DHASH_SIZE[1]}, {DHASH_SIZE[0]}), got {stack.shape}")
    return _pack(stack[:, :, 1:] > stack[:, :, :-1])


def phash_batch(images: Sequence[Image.Image], mirror: bool = False) -> np.ndarray:
    """``int(str(imagehash.phash(img)), 16)`` for each image, as uint64 (N,).

    ``mirror=True`` hashes the horizontally mirrored images (``ImageOps.mirror``) instead.
    """
    pixels = thumbnails(images, PHASH_SIZE)
    return phash_pixels(pixels[:, :, ::-1] if mirror else pixels)


def dhash_batch(images: Sequence[Image.Image], mirror: bool = False) -> np.ndarray:
    """``int(str(imagehash.dhash(img)), 16)`` for each image, as uint64 (N,).

    ``mirror=True`` hashes the horizontally mirrored images (``ImageOps.mirror``) instead.
    """
    pixels = thumbnails(images, DHASH_SIZE)
    return dhash_pixels(pixels[:, :, ::-1] if mirror else pixels)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of differing bits between uint64 hashes (broadcasting, like ``a ^ b``); uint8 0..64."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _popcount_lut(x)


def _popcount_lut(x: np.ndarray) -> np.ndarray:
    """Popcount of uint64 values through a byte lookup table (numpy < 2.0)."""
    flat = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    counts = _POPCOUNT8[flat.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.uint8)
    return counts.reshape(np.shape(x))


# --------------------------------------------------------------------------- fast, robust hashing
#
# The fast mode hashes the small grayscale image of a reduced-scale decode
# (:func:`mmcurate.decode.image.decode_reduced`), not the full-size one: with the borders trimmed
# first, and optionally with extra "variant" hashes of the rotated image, so copies that were
# letterboxed, padded or turned still match. Not bit-identical to imagehash.

BORDER_TOLERANCE = 6
"""Grey levels a border line may deviate from its band's colour (JPEG ringing, noise)."""
BORDER_MAX_SHARE = 0.6
"""At most this share of a side's length is trimmed in total (two thirds of the picture stays)."""
_INSIDE_LINES = 4
_CONTRAST = 4.0
"""The lines just inside a border (as many as the band, at least ``_INSIDE_LINES``) vary at least
this many times as much as the band does."""
_FLAT_STD = 2.0
"""A trimmed region flatter than this (grey-level standard deviation) is not trusted: kept whole."""


def _band(lines: np.ndarray, limit: int) -> int:
    """How many of the first ``limit`` of ``lines`` (outermost first, shape (L, length)) form a border: each line
    within :data:`BORDER_TOLERANCE` of the outermost line's median at 90% of its pixels and
    within three times that everywhere (compression rings near a border), and the lines just
    inside clearly less flat than the band (a wall or a sky fades in; a picture starts). The
    line where the band meets the picture, a blend of both once resized, goes with the band."""
    colour = float(np.median(lines[0]))
    off = np.abs(lines[:limit].astype(np.int16) - colour)
    flat = (np.percentile(off, 90, axis=1) <= BORDER_TOLERANCE) & (off.max(axis=1) <= 3 * BORDER_TOLERANCE)
    depth = int(np.argmin(flat)) if not flat.all() else len(flat)
    if depth == 0:
        return 0
    inside = lines[depth : depth + max(depth, _INSIDE_LINES)]
    return min(depth + 1, limit) if inside.std() >= _CONTRAST * max(float(lines[:depth].std()), 1.0) else 0


def border_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of ``gray`` (H, W) uint8 once uniform borders are trimmed.

    A border is a run of whole rows (columns) at an edge, each within
    :data:`BORDER_TOLERANCE` grey levels of one colour everywhere: letterbox and pillarbox bars
    and padding of any colour. Real content stays: a band must be flat along its entire length
    and the picture inside it much less flat (a photographed wall has lighting gradients and
    texture that go on past any flat edge), all sides together may trim at most
    :data:`BORDER_MAX_SHARE` of a side, and when what would remain is itself flat (a blank
    wall, a solid colour) nothing is trimmed.
    """
    h, w = gray.shape
    box = (0, 0, w, h)
    if h < 4 or w < 4:
        return box
    edges = (gray[0], gray[-1], gray[:, 0], gray[:, -1])
    if all(int(e.max()) - int(e.min()) > 2 * BORDER_TOLERANCE for e in edges):  # no flat edge (most photos)
        return box
    most_h, most_w = int(BORDER_MAX_SHARE * h), int(BORDER_MAX_SHARE * w)
    top = _band(gray, most_h)
    bottom = _band(gray[::-1], most_h - top)
    left = _band(gray.T, most_w)
    right = _band(gray.T[::-1], most_w - left)
    if not top + bottom + left + right or gray[top : h - bottom, left : w - right].std() < _FLAT_STD:
        return box
    return left, top, w - right, h - bottom


def _turn(angle: float, aspect: float, squashed: tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix (output pixel -> input pixel, centres at +0.5) that turns a picture of
    aspect ratio ``aspect`` (w / h) by ``angle`` degrees counter-clockwise about its centre, as
    ``Image.rotate`` on the same canvas, applied to a copy squashed to ``squashed`` (w, h):
    the squashed copy of the turned picture. Right angles swap the sides (``expand=True``)."""
    turned = (1.0, aspect) if angle % 180 == 90 else (aspect, 1.0)
    # squash factors of the picture (aspect x 1) and of the turned one
    in_x, in_y, out_x, out_y = squashed[0] / aspect, squashed[1], squashed[0] / turned[0], squashed[1] / turned[1]
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)
    a, b, d, e = in_x / out_x * cos, -in_x / out_y * sin, in_y / out_x * sin, in_y / out_y * cos
    cx, cy = squashed[0] / 2, squashed[1] / 2
    return np.array([[a, b, cx - a * cx - b * cy], [d, e, cy - d * cx - e * cy]])


@functools.lru_cache(maxsize=64)
def _turn_matrix(angles: tuple[float, ...], aspect_step: int, size: tuple[int, int]) -> Any:
    """Sparse (len(angles) * h * w, 4 * h * w) matrix from a picture squashed to twice ``size``
    (flattened) to the ``size`` thumbnails of it turned by each angle: bilinear samples of the
    double-size turn (black outside the picture), averaged 2x2. ``aspect_step`` is the picture's
    aspect ratio as ``round(16 * log2(w / h))`` (4% steps; one matrix serves them all)."""
    import scipy.sparse

    w2, h2 = 2 * size[0], 2 * size[1]
    ys, xs = np.mgrid[0:h2, 0:w2].reshape(2, -1) + 0.5
    target = (ys.astype(np.int64) // 2) * size[0] + xs.astype(np.int64) // 2  # output thumbnail pixel
    rows, cols, vals = [], [], []
    for k, angle in enumerate(angles):
        m = _turn(angle, 2.0 ** (aspect_step / 16), (w2, h2))
        sx, sy = m[0, 0] * xs + m[0, 1] * ys + m[0, 2] - 0.5, m[1, 0] * xs + m[1, 1] * ys + m[1, 2] - 0.5
        x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
        fx, fy = sx - x0, sy - y0
        for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            x, y = x0 + dx, y0 + dy
            inside = (x >= 0) & (x < w2) & (y >= 0) & (y < h2) & (wt > 0)
            rows.append(k * size[0] * size[1] + target[inside])
            cols.append(y[inside] * w2 + x[inside])
            vals.append(wt[inside] / 4)
    shape = (len(angles) * size[0] * size[1], w2 * h2)
    return scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape, dtype=np.float32)


REGIONS: tuple[tuple[float, float, float, float], ...] = (
    (0.026, 0.026, 0.974, 0.974), (0.053, 0.053, 0.947, 0.947), (0.082, 0.082, 0.918, 0.918),
    (0.0, 0.0, 1.0, 0.8), (0.0, 0.2, 1.0, 1.0), (0.0, 0.0, 0.8, 1.0), (0.2, 0.0, 1.0, 1.0),
)
"""Windows (left, top, right, bottom, as shares of the picture) hashed by ``regions``: centre
crops keeping 90, 80 and 70% of the area, then the top, bottom, left and right 80%. A crop
matches its original's centre window; a caption or logo over one edge leaves a window of both
pictures untouched, and those two windows match."""


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's LANCZOS kernel (a = 3)."""
    return np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def _resample(src: int, start: float, end: float, out: int) -> np.ndarray:
    """(out, src) weights that resize pixels ``start..end`` of a line of ``src`` pixels to ``out``
    pixels, as Pillow's LANCZOS resize with a ``box`` does (kernel widened by the scale when
    shrinking, taps outside the line dropped, each row normalised)."""
    scale = (end - start) / out
    widen = max(scale, 1.0)
    centres = start + (np.arange(out) + 0.5) * scale
    taps = np.arange(src) + 0.5
    weights = _lanczos((taps[None, :] - centres[:, None]) / widen)
    return weights / weights.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=16)
def _window_matrices(windows: tuple[tuple[float, float, float, float], ...], size: tuple[int, int], dct: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row weights (K, h, 2h) and column weights (K * w, 2w) that take each window of a picture
    squashed to twice ``size`` to a ``size`` thumbnail: ``rows[k] @ double @ cols[k].T``. With
    ``dct``, each is multiplied by the first 8 DCT rows (``size`` must be :data:`PHASH_SIZE`),
    giving the thumbnail's 8x8 lowest DCT coefficients (:func:`_dct_low`) instead of its pixels."""
    w, h = size
    rows = np.stack([_resample(2 * h, 2 * h * top, 2 * h * bottom, h) for _, top, _, bottom in windows])
    cols = np.stack([_resample(2 * w, 2 * w * left, 2 * w * right, w) for left, _, right, _ in windows])
    if dct:
        rows, cols = _dct_rows() @ rows, _dct_rows() @ cols
    return rows.astype(np.float32), cols.reshape(-1, 2 * w).astype(np.float32)


def _windows(double: np.ndarray, windows: tuple[tuple[float, float, float, float], ...], size: tuple[int, int], dct: bool = False) -> np.ndarray:
    """(N, K, h, w) float32 thumbnails (with ``dct``: (N, K, 8, 8) coefficients) of each window of
    (N, 2h, 2w) double-size pictures: one matrix product for the columns of every window, then
    one per window for its rows, each over the whole batch (a separable LANCZOS resize, see
    :func:`_resample`)."""
    rows, cols = _window_matrices(windows, size, dct)
    n, h2, w2 = double.shape
    k, out_h, out_w = len(windows), rows.shape[1], cols.shape[0] // len(windows)
    across = (double.reshape(n * h2, w2) @ cols.T).reshape(n, h2, k, out_w)  # each window's columns
    stacked = np.ascontiguousarray(across.transpose(2, 1, 0, 3)).reshape(k, h2, n * out_w)
    return (rows @ stacked).reshape(k, out_h, n, out_w).transpose(2, 0, 1, 3)


_WHOLE = (0.0, 0.0, 1.0, 1.0)


def _doubles(grays: Sequence[Image.Image], size: tuple[int, int], trim: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each small grayscale image, uniform borders trimmed when ``trim`` (:func:`border_box`),
    resized (BILINEAR, widened when shrinking) to twice ``size``: (N, 2h, 2w) float32, and each
    trimmed picture's aspect ratio as ``round(16 * log2(w / h))`` (see :func:`_turn_matrix`)."""
    double = np.empty((len(grays), 2 * size[1], 2 * size[0]), dtype=np.float32)
    aspect = np.empty(len(grays), dtype=np.int64)
    for n, gray in enumerate(grays):
        if gray.mode != "L":
            gray = gray.convert("L")
        box = border_box(np.asarray(gray)) if trim else (0, 0, gray.width, gray.height)
        double[n] = np.asarray(gray.resize((2 * size[0], 2 * size[1]), Image.Resampling.BILINEAR, box=box))
        aspect[n] = round(16 * math.log2((box[2] - box[0]) / (box[3] - box[1])))
    return double, aspect


def _turned(double: np.ndarray, aspect: np.ndarray, angles: tuple[float, ...], size: tuple[int, int], dct: bool = False) -> np.ndarray:
    """(N, len(angles), h, w) float32 thumbnails (with ``dct``: (N, len(angles), 8, 8) coefficients,
    see :func:`_dct_low`) of each double-size picture turned by each angle (the canvas kept:
    corners turning in are black); one sparse product per aspect ratio."""
    w, h = size
    shape = (HASH_SIZE, HASH_SIZE) if dct else (h, w)
    out = np.empty((len(double), len(angles), *shape), dtype=np.float32)
    flat = double.reshape(len(double), -1)
    dct_rows = _dct_rows().astype(np.float32)
    for step in np.unique(aspect):
        rows = np.flatnonzero(aspect == step)
        turned = (_turn_matrix(angles, int(step), size) @ flat[rows].T).reshape(len(angles), h, w, len(rows))
        if dct:  # DCT down each column, then along each row, the batch kept last
            down = (dct_rows @ turned.reshape(len(angles), h, w * len(rows))).reshape(len(angles) * HASH_SIZE, w, len(rows))
            turned = (dct_rows @ down).reshape(len(angles), HASH_SIZE, HASH_SIZE, len(rows))
        out[rows] = turned.transpose(3, 0, 1, 2)
    return out


def _views(grays: Sequence[Image.Image], size: tuple[int, int], trim: bool, rotations: Sequence[float],
           windows: Sequence[tuple[float, float, float, float]], dct: bool) -> np.ndarray:
    """(N, 1 + len(rotations) + len(windows), h, w) float32 thumbnails (with ``dct``: their 8x8
    lowest DCT coefficients, see :func:`_dct_low`) of each image, its turns and its windows, in
    that order (see :func:`robust_thumbnails`)."""
    double, aspect = _doubles(grays, size, trim)
    seen = _windows(double, (_WHOLE, *windows), size, dct)  # the picture, then its windows
    out = np.empty((len(grays), 1 + len(rotations) + len(windows), *seen.shape[2:]), dtype=np.float32)
    out[:, 0] = seen[:, 0]
    out[:, 1 + len(rotations) :] = seen[:, 1:]
    right = [i for i, a in enumerate(rotations, start=1) if a % 90 == 0 and size[0] == size[1]]
    for i in right:  # a square picture turns a quarter exactly
        turns = int(rotations[i - 1] // 90)
        out[:, i] = _quarter_turns(out[:, 0], turns) if dct else np.rot90(out[:, 0], turns % 4, axes=(1, 2))
    slots = [i for i in range(1, 1 + len(rotations)) if i not in right]
    if slots:
        out[:, slots] = _turned(double, aspect, tuple(rotations[i - 1] for i in slots), size, dct)
    return out


def robust_thumbnails(
    grays: Sequence[Image.Image],
    size: tuple[int, int],
    trim: bool = True,
    rotations: Sequence[float] = (),
    windows: Sequence[tuple[float, float, float, float]] = (),
) -> np.ndarray:
    """Hash thumbnails (``size`` = (w, h)) of small grayscale images: first of each image itself
    (uniform borders trimmed when ``trim``, see :func:`border_box`), then of it turned by each
    angle of ``rotations`` (degrees, counter-clockwise; right angles turn the whole picture,
    other angles keep the canvas, as ``Image.rotate`` does: corners turning in are black),
    then of each window of ``windows`` (see :data:`REGIONS`).
    (N, 1 + len(rotations) + len(windows), h, w) uint8.

    Each image costs one Pillow resize (BILINEAR, widened when shrinking: of the trimmed picture
    to twice the thumbnail's size); the rest are matrix products over the batch: the picture
    and its windows by separable resampling, turns by sparse matrices. :func:`robust_phashes`
    hashes the same thumbnails without making them."""
    return _to_uint8(_views(grays, size, trim, rotations, windows, dct=False))


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


_SIGNS = (-1.0) ** np.arange(HASH_SIZE)
"""DCT-II of a reversed line: each coefficient times ``(-1) ** k``."""


def _quarter_turns(low: np.ndarray, turns: int) -> np.ndarray:
    """(N, 8, 8) lowest DCT coefficients of a square picture -> those of it turned by ``turns``
    quarters counter-clockwise (``np.rot90(pixels, turns)``), exactly: a turn is a transpose and
    a reversal, and reversing a line flips the sign of its odd coefficients."""
    turns %= 4
    if turns == 1:  # rot90 = reversed rows of the transpose
        return _SIGNS[:, None] * low.transpose(0, 2, 1)
    if turns == 2:
        return _SIGNS[:, None] * low * _SIGNS[None, :]
    if turns == 3:  # reversed columns of the transpose
        return low.transpose(0, 2, 1) * _SIGNS[None, :]
    return low


def robust_phashes(
    grays: Sequence[Image.Image],
    trim: bool = True,
    rotations: Sequence[float] = (),
    windows: Sequence[tuple[float, float, float, float]] = (),
    mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """pHashes of :func:`robust_thumbnails`' thumbnails (``size`` :data:`PHASH_SIZE`): (N, 1 +
    len(rotations) + len(windows)) uint64, and (N,) of each picture mirrored when ``mirror``.

    The thumbnails are never made: each resize is linear, so the resize and the DCT fold into
    one product that gives the 8x8 coefficients the hash reads (the 32x32 thumbnail is not
    rounded to whole grey levels on the way); right-angle turns and the mirror are sign flips
    and transposes of the picture's own coefficients."""
    low = _views(grays, PHASH_SIZE, trim, rotations, windows, dct=True)  # (N, 1 + turns + windows, 8, 8)
    hashes = _bits(low.reshape(-1, HASH_SIZE, HASH_SIZE)).reshape(low.shape[:2])
    return hashes, (_bits(low[:, 0] * _SIGNS[None, :]) if mirror else None)
