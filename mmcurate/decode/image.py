"""Image decoding with Pillow: header check before any pixel is allocated, EXIF orientation applied."""

from __future__ import annotations

import io
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageOps

from .errors import DecodeError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageMeta", "TooLarge", "decode_image", "measure_image"]

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb warning threshold
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
EXIF_ORIENTATION = 0x0112  # the EXIF tag holding the orientation

_limit_lock = threading.Lock()


class TooLarge(DecodeError):
    """An image over the pixel limit, refused from its header."""

    def __init__(self, width: int, height: int, max_pixels: int):
        super().__init__(f"decode_error: image too large ({width}x{height} > {max_pixels} pixels)")
        self.pixels = width * height


@dataclass(frozen=True)
class ImageMeta:
    """What a verified decode tells without keeping pixels: upright size, mode, file format."""

    width: int
    height: int
    mode: str
    format: str


@contextmanager
def _pillow_limit(max_pixels: int) -> Iterator[None]:
    """Let Pillow open headers up to ``max_pixels`` (its own global limit would refuse sooner);
    our explicit header check below is the guard."""
    with _limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None if saved is None else max(saved, max_pixels)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def _decoding(data: bytes, max_pixels: int) -> Iterator[tuple[Image.Image, str]]:
    """Open ``data`` (header only, size checked) and turn every failure inside the block into
    :class:`DecodeError` with a short reason."""
    if not data:
        raise DecodeError("decode_error: empty image member")
    try:
        with warnings.catch_warnings(), _pillow_limit(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
        width, height = img.size
        if width * height > max_pixels:
            raise TooLarge(width, height, max_pixels)
        yield img, img.format or "unknown"
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decode_error: decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:
        raise DecodeError("decode_error: not a recognised image format") from None
    except Exception as exc:  # Pillow raises many types for bad data
        raise DecodeError(f"decode_error: {type(exc).__name__}: {exc}") from None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """Decode ``data`` fully; return the upright image and its file format (``"JPEG"``, ...).

    Raises :class:`DecodeError` for empty, unidentifiable, truncated or oversized images;
    an image larger than ``max_pixels`` is refused from its header, before decoding.
    """
    with _decoding(data, max_pixels) as (img, fmt):
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    return img, fmt


def measure_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageMeta:
    """Verify that ``data`` decodes and return its upright size, mode and format, keeping no pixels.

    The same checks and errors as :func:`decode_image`, at about half its cost for JPEG:
    libjpeg decodes at 1/8 scale (DCT scaling), which still entropy-decodes every block of
    the file, so truncated and unreadable data fail exactly as in a full decode. Other
    formats are decoded in full.
    """
    with _decoding(data, max_pixels) as (img, fmt):
        width, height = img.size
        orientation = img.getexif().get(EXIF_ORIENTATION)
        img.draft(None, (1, 1))  # JPEG only; a no-op for other formats
        img.load()
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageMeta(width, height, img.mode, fmt)
