"""Image decoding with Pillow: only the formats the recipe names, header check before any pixel
is allocated, EXIF orientation applied.

Member bytes are never sniffed against every Pillow plugin: a ``.jpg`` holding PostScript
would otherwise reach the EPS plugin (and Ghostscript). :func:`image_formats` turns the
recipe's image extensions into the Pillow formats that may open them; everything else is
refused as ``decode_error: unsupported format X``.
"""

from __future__ import annotations

import io
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from PIL import Image, ImageOps

from .errors import DecodeError

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "REDUCED_SIDE",
    "ImageMeta",
    "Reduced",
    "TooLarge",
    "decode_image",
    "decode_reduced",
    "decoded_bytes",
    "image_formats",
    "measure_image",
    "open_header",
]

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb warning threshold
DEFAULT_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
"""Extensions of the ``image`` modality when a recipe names none."""
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
EXIF_ORIENTATION = 0x0112  # the EXIF tag holding the orientation
_T = Image.Transpose
_UPRIGHT = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE, 6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
"""The transpose that turns an image with each EXIF orientation upright (as ``ImageOps.exif_transpose``)."""
REDUCED_SIDE = 96
"""A reduced decode keeps at least this many pixels on each side (when the image has them)."""

_limit_lock = threading.Lock()


def image_formats(extensions: Iterable[str]) -> tuple[str, ...]:
    """The Pillow formats image members with these extensions may hold, in order, each once:
    each extension's last part as Pillow registers it (jpg, jpeg -> JPEG; png -> PNG;
    tif -> TIFF; ...); extensions Pillow does not know add nothing. The one place that
    decides which Pillow plugins see member bytes."""
    registered = Image.registered_extensions()  # also loads every plugin, once
    found = (registered.get("." + ext.lower().rsplit(".", 1)[-1]) for ext in extensions)
    return tuple(dict.fromkeys(f for f in found if f is not None))


DEFAULT_FORMATS = image_formats(DEFAULT_IMAGE_EXTENSIONS)


def _sniff(data: bytes) -> str | None:
    """The format whose magic bytes ``data`` starts with (Pillow's prefix checks only, no plugin
    opens it), or None."""
    prefix = data[:16]
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if accept is not None and accept(prefix) is True:
            return fmt
    return None


def open_header(data: bytes, formats: Sequence[str] = DEFAULT_FORMATS) -> Image.Image:
    """``Image.open`` of ``data`` with only ``formats``' plugins (reads the header only).

    Raises :class:`DecodeError` ``unsupported format X`` when the bytes are of another format,
    and ``not a recognised image format`` when no plugin knows them; other Pillow errors
    (a damaged header) pass through."""
    try:
        return Image.open(io.BytesIO(data), formats=list(formats))
    except Image.UnidentifiedImageError:
        found = _sniff(data)
        if found is None or found in formats:
            raise DecodeError("decode_error: not a recognised image format") from None
        allowed = ", ".join(formats) or "none"
        raise DecodeError(f"decode_error: unsupported format {found} (the recipe's image extensions allow {allowed})") from None


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
def _decoding(data: bytes, max_pixels: int, formats: Sequence[str]) -> Iterator[tuple[Image.Image, str]]:
    """Open ``data`` with ``formats`` (header only, size checked) and turn every failure inside
    the block into :class:`DecodeError` with a short reason."""
    if not data:
        raise DecodeError("decode_error: empty image member")
    try:
        with warnings.catch_warnings(), _pillow_limit(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = open_header(data, formats)
        width, height = img.size
        if width * height > max_pixels:
            raise TooLarge(width, height, max_pixels)
        yield img, img.format or "unknown"
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decode_error: decompression bomb ({exc})") from None
    except Exception as exc:  # Pillow raises many types for bad data
        raise DecodeError(f"decode_error: {type(exc).__name__}: {exc}") from None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] = DEFAULT_FORMATS) -> tuple[Image.Image, str]:
    """Decode ``data`` fully; return the upright image and its file format (``"JPEG"``, ...).

    Raises :class:`DecodeError` for empty, unidentifiable, truncated or oversized images and
    for images of a format outside ``formats``; an image larger than ``max_pixels`` is
    refused from its header, before decoding.
    """
    with _decoding(data, max_pixels, formats) as (img, fmt):
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    return img, fmt


@dataclass(frozen=True)
class Reduced:
    """A verified reduced-scale decode: the upright grayscale picture (about
    :data:`REDUCED_SIDE` px or more a side) and the full image's :class:`ImageMeta`."""

    gray: Image.Image
    meta: ImageMeta


def _scale(width: int, height: int) -> int:
    """The largest of 8, 4, 2, 1 that keeps both sides >= REDUCED_SIDE (as JPEG ``draft`` picks)."""
    fit = min(width, height) // REDUCED_SIDE
    return next(s for s in (8, 4, 2, 1) if fit >= s or s == 1)


def decode_reduced(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] = DEFAULT_FORMATS) -> Reduced:
    """Verify that ``data`` decodes; keep a small upright grayscale copy and the image's meta.

    The same checks and errors as :func:`decode_image`, for less than its cost for JPEG (a third
    to four fifths of it: entropy decoding remains): libjpeg decodes grayscale at 1/2 to 1/8
    scale (DCT scaling), which still entropy-decodes every block of the file, so truncated and
    unreadable data fail exactly as in a full decode. Other formats are decoded in full, then
    box-reduced by the same factor.
    """
    with _decoding(data, max_pixels, formats) as (img, fmt):
        width, height = img.size
        mode = img.mode
        orientation = img.getexif().get(EXIF_ORIENTATION)
        scale = _scale(width, height)
        img.draft("L", (width // scale, height // scale))  # JPEG only; a no-op for other formats
        img.load()
        gray = img if img.mode == "L" else img.convert("L")
        if gray.size == (width, height) and scale > 1:  # not DCT-scaled: reduce the same way
            gray = gray.reduce(scale)
        if orientation in _UPRIGHT:
            gray = gray.transpose(_UPRIGHT[orientation])
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return Reduced(gray, ImageMeta(width, height, mode, fmt))


def measure_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] = DEFAULT_FORMATS) -> ImageMeta:
    """Verify that ``data`` decodes and return its upright size, mode and format, keeping no
    pixels: :func:`decode_reduced`'s checks and cost."""
    return decode_reduced(data, max_pixels, formats).meta


def decoded_bytes(data: bytes, formats: Sequence[str] = DEFAULT_FORMATS) -> int:
    """Bytes Pillow will hold for the decoded pixels of ``data``, from the header alone (one byte
    per pixel for 1/L/P images, four for the rest); 0 for what does not open as an image of
    ``formats`` (its decode fails with a reason, holding nothing)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = open_header(data, formats)
        width, height = img.size
        return width * height * (1 if img.mode in ("1", "L", "P") else 4)
    except Exception:  # not an image: its decode fails later, with a reason
        return 0
