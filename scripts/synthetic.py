"""Deterministic synthetic data for demos and tests: photo-like images, captions, WebDataset tars.

Everything takes an explicit ``numpy.random.Generator`` so that a fixed seed gives
byte-identical output (for a given Pillow/libjpeg build).
"""

from __future__ import annotations

import io
import os

from collections.abc import Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mmcurate.io.tarwrite import write_tar as _write_members

__all__ = [
    "photo_like",
    "jpeg_bytes",
    "png_bytes",
    "webp_bytes",
    "random_caption",
    "write_tar",
]

# --------------------------------------------------------------------------- images

_SCENE_SCALE = 4  # the scene (background + shapes) is drawn at 1/4 resolution, then upsampled


def _field(rng: np.random.Generator, grid_w: int, grid_h: int, width: int, height: int) -> np.ndarray:
    """A random ``grid_w x grid_h`` RGB grid, bicubically upsampled to ``(height, width, 3)`` float32."""
    grid = rng.integers(0, 256, size=(grid_h, grid_w, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), dtype=np.float32)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = rng.integers(0, 256, size=3)
    return int(r), int(g), int(b)


def _draw_shapes(rng: np.random.Generator, canvas: Image.Image, count: int) -> None:
    """Draw ``count`` random ellipses, rectangles and triangles onto ``canvas`` in place."""
    w, h = canvas.size
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        kind = int(rng.integers(0, 3))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
        colour = _random_colour(rng)
        if kind == 0:
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
        elif kind == 1:
            draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
        else:
            angles = rng.uniform(0, 2 * np.pi, size=3)
            points = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]
            draw.polygon([(float(x), float(y)) for x, y in points], fill=colour)


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Return a procedurally drawn RGB image whose JPEG behaves like a natural photo.

    Layers: a smooth multi-colour background (two bicubically upsampled random fields),
    a few soft-edged shapes, a mid-frequency texture and mild per-pixel luminance noise.
    A 640x480 image takes a few milliseconds and is ~30-90 KB as JPEG at quality 85.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    sw, sh = max(4, -(-width // _SCENE_SCALE)), max(4, -(-height // _SCENE_SCALE))

    # Scene at low resolution: gradient-like background plus blurred shapes.
    coarse = _field(rng, int(rng.integers(2, 5)), int(rng.integers(2, 5)), sw, sh)
    medium = _field(rng, int(rng.integers(6, 12)), int(rng.integers(5, 10)), sw, sh)
    background = 0.75 * coarse + 0.25 * medium
    scene = Image.fromarray(background.astype(np.uint8))
    _draw_shapes(rng, scene, count=int(rng.integers(3, 8)))
    scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.5)))
    pixels = np.asarray(scene.resize((width, height), Image.BICUBIC), dtype=np.int16)

    # Full-resolution detail, luminance only, in integer arithmetic for speed:
    # a mid-frequency texture plus uniform per-pixel noise.
    grid = rng.integers(0, 256, size=(max(2, height // 6), max(2, width // 6)), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), dtype=np.int16)
    detail = ((texture - 128) * int(rng.integers(2, 5))) >> 4  # +-16..32 grey levels
    detail += rng.integers(-5, 6, size=(height, width), dtype=np.int16)
    pixels += detail[..., None]
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality: int = 85) -> bytes:
    """Encode ``img`` as a baseline JPEG (4:2:0, no EXIF)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    """Encode ``img`` as PNG (no timestamp chunk, so output is deterministic)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def webp_bytes(img: Image.Image, quality: int = 80) -> bytes:
    """Encode ``img`` as lossy WebP."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


# --------------------------------------------------------------------------- captions

_ADJECTIVES = (
    "red", "blue", "green", "yellow", "white", "black", "small", "large", "old",
    "shiny", "wooden", "bright", "quiet", "busy", "tall", "empty", "colourful",
)
_NOUNS = (
    "car", "dog", "cat", "house", "tree", "bicycle", "boat", "bridge", "mountain",
    "street", "garden", "train", "bird", "horse", "chair", "lamp", "market", "tower",
)
_PARTICIPLES = ("parked", "standing", "sleeping", "waiting", "resting", "shown", "seen")
_PREFIXES = (("a", "photo", "of", "a"), ("an", "image", "of", "a"), ("close-up", "of", "a"))
_PLACES = (
    ("near", "the", "river"), ("in", "the", "park"), ("on", "the", "beach"),
    ("beside", "the", "road"), ("under", "the", "trees"), ("in", "the", "city"),
)
_TIMES = (("at", "sunset"), ("in", "winter"), ("at", "night"), ("in", "spring"))
_EXTRAS = (("with", "a", "dog"), ("next", "to", "a", "fence"), ("on", "a", "cloudy", "day"))


def _pick(rng: np.random.Generator, options: tuple) -> tuple[str, ...]:
    choice = options[int(rng.integers(0, len(options)))]
    return choice if isinstance(choice, tuple) else (choice,)


def random_caption(rng: np.random.Generator, min_words: int = 3, max_words: int = 10) -> str:
    """Return a plain-English caption with between ``min_words`` and ``max_words`` words.

    Built from optional slots around one noun (prefix such as "a photo of a", article,
    adjective, participle, place, time, extra); slots that do not fit the drawn length are skipped and any
    remaining words are filled with extra adjectives.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    n = int(rng.integers(min_words, max_words + 1))
    noun = _pick(rng, _NOUNS)
    slots = {
        "prefix": _pick(rng, _PREFIXES),
        "article": ("a",),
        "adjective": _pick(rng, _ADJECTIVES),
        "participle": _pick(rng, _PARTICIPLES),
        "place": _pick(rng, _PLACES),
        "time": _pick(rng, _TIMES),
        "extra": _pick(rng, _EXTRAS),
    }
    chosen: set[str] = set()
    remaining = n - 1
    for name in rng.permutation(list(slots)):
        if {"prefix", "article"} <= chosen | {name}:
            continue  # the prefix already ends with an article
        if len(slots[name]) <= remaining:
            chosen.add(str(name))
            remaining -= len(slots[name])
    adjectives = [a for a in rng.permutation(_ADJECTIVES) if a not in slots["adjective"]]
    fillers = tuple(str(a) for a in adjectives[:remaining])

    words: list[str] = []
    for name in ("prefix", "article"):
        if name in chosen:
            words += slots[name]
    words += fillers
    if "adjective" in chosen:
        words += slots["adjective"]
    words += noun
    for name in ("participle", "place", "extra", "time"):
        if name in chosen:
            words += slots[name]
    # "a" -> "an" before a vowel ("a old car" -> "an old car").
    for i in range(len(words) - 1):
        if words[i] == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)


# --------------------------------------------------------------------------- tars


def write_tar(path: str | os.PathLike[str], samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> None:
    """Write a WebDataset tar with members ``KEY.EXT``, in the given order, deterministically
    and atomically (through :func:`mmcurate.io.tarwrite.write_tar`)."""
    members = []
    for key, exts in samples:
        if not key or "." in key or "/" in key:
            raise ValueError(f"invalid sample key {key!r}")
        members.extend((f"{key}.{ext}", data) for ext, data in exts.items())
    _write_members(path, members)
