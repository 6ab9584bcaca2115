"""A sample as annotators see it: members looked up by modality, decoded once and shared."""

from __future__ import annotations

from typing import Mapping

from PIL import Image

from .decode import DecodeError
from .decode.image import DEFAULT_MAX_PIXELS, ImageMeta, TooLarge, decode_image, measure_image
from .tarread import Sample

__all__ = ["SampleView"]


class SampleView:
    """Wraps a :class:`Sample`; ``modalities`` maps a modality to its extensions in preference order.

    ``pixels`` says whether some annotator will read the decoded image: when none will,
    :meth:`image_meta` verifies the image with a cheaper reduced-scale decode instead.
    """

    def __init__(self, sample: Sample, modalities: Mapping[str, tuple[str, ...]], pixels: bool = True):
        self.sample = sample
        self.modalities = modalities
        self.pixels = pixels
        self._image: tuple[Image.Image, str] | DecodeError | None = None
        self._meta: ImageMeta | DecodeError | None = None

    @property
    def key(self) -> str:
        return self.sample.key

    def member(self, modality: str) -> tuple[str, bytes] | None:
        """(extension, bytes) of the sample's first member of ``modality``, or None."""
        for ext in self.modalities.get(modality, ()):
            data = self.sample.get(ext)
            if data is not None:
                return ext, data
        return None

    def require(self, modality: str) -> bytes:
        """Bytes of the ``modality`` member; :class:`DecodeError` ``missing_<modality>`` if absent."""
        found = self.member(modality)
        if found is None:
            exts = "/".join(self.modalities.get(modality, ())) or "(none configured)"
            raise DecodeError(f"missing_{modality}: no member with extension {exts}")
        return found[1]

    def image(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
        """The decoded upright image and its format. Decoded once per sample: a later call with
        another pixel limit checks the decoded size instead of decoding again."""
        cached = self._image
        if cached is None or (isinstance(cached, TooLarge) and cached.pixels <= max_pixels):
            try:
                cached = decode_image(self.require("image"), max_pixels)
            except DecodeError as exc:
                cached = exc
            self._image = cached
        if isinstance(cached, DecodeError):
            raise cached
        width, height = cached[0].size
        if width * height > max_pixels:
            raise TooLarge(width, height, max_pixels)
        return cached

    def image_meta(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageMeta:
        """Upright size, mode and format of a verified decode: from :meth:`image` when pixels are
        wanted (or already decoded), else from :func:`measure_image`, once per sample."""
        if self.pixels or self._image is not None:
            img, fmt = self.image(max_pixels)
            return ImageMeta(img.width, img.height, img.mode, fmt)
        cached = self._meta
        if cached is None or (isinstance(cached, TooLarge) and cached.pixels <= max_pixels):
            try:
                cached = measure_image(self.require("image"), max_pixels)
            except DecodeError as exc:
                cached = exc
            self._meta = cached
        if isinstance(cached, DecodeError):
            raise cached
        if cached.width * cached.height > max_pixels:
            raise TooLarge(cached.width, cached.height, max_pixels)
        return cached
