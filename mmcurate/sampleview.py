"""A sample as annotators see it: members looked up by modality, decoded once and shared."""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from PIL import Image

from .decode import DecodeError
from .decode.audio import Audio
from .decode.image import DEFAULT_MAX_PIXELS, ImageMeta, TooLarge, decode_image, measure_image
from .decode.sandbox import DEFAULT_TIMEOUT_S, decode_audio_limited, probe_video_limited, sample_frames_limited
from .decode.video import FrameRequest, VideoFrames, VideoInfo
from .tarread import Sample

__all__ = ["SampleView"]

T = TypeVar("T")


class SampleView:
    """Wraps a :class:`Sample`; ``modalities`` maps a modality to its extensions in preference order.

    ``pixels`` says whether some annotator will read the decoded image: when none will,
    :meth:`image_meta` verifies the image with a cheaper reduced-scale decode instead.
    """

    def __init__(self, sample: Sample, modalities: Mapping[str, tuple[str, ...]], pixels: bool = True):
        self.sample = sample
        self.modalities = modalities
        self.pixels = pixels
        self._decoded: dict[Any, Any] = {}
        """Decode results (or the DecodeError) by kind: ``"image"`` (pixels), ``"meta"``, or a
        video/audio request tuple (see :meth:`_once`)."""

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
        return self._decode_once("image", decode_image, lambda found: found[0].size, max_pixels)

    def image_meta(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageMeta:
        """Upright size, mode and format of a verified decode: from :meth:`image` when pixels are
        wanted (or already decoded), else from :func:`measure_image`, once per sample."""
        if self.pixels or "image" in self._decoded:
            img, fmt = self.image(max_pixels)
            return ImageMeta(img.width, img.height, img.mode, fmt)
        return self._decode_once("meta", measure_image, lambda meta: (meta.width, meta.height), max_pixels)

    def _decode_once(self, kind: str, decode: Callable[[bytes, int], T], size: Callable[[T], tuple[int, int]], max_pixels: int) -> T:
        """``decode(image bytes, max_pixels)``, remembered (failures too) under ``kind``; redone
        only when an earlier call refused the image as too large and this limit admits it."""
        cached = self._decoded.get(kind)
        if cached is None or (isinstance(cached, TooLarge) and cached.pixels <= max_pixels):
            try:
                cached = decode(self.require("image"), max_pixels)
            except DecodeError as exc:
                cached = exc
            self._decoded[kind] = cached
        if isinstance(cached, DecodeError):
            raise cached
        width, height = size(cached)
        if width * height > max_pixels:
            raise TooLarge(width, height, max_pixels)
        return cached

    def _once(self, key: tuple[Any, ...], decode: Callable[[], T]) -> T:
        """``decode()`` once per ``key`` per sample; a DecodeError is remembered and re-raised."""
        if key not in self._decoded:
            try:
                self._decoded[key] = decode()
            except DecodeError as exc:
                self._decoded[key] = exc
        found = self._decoded[key]
        if isinstance(found, DecodeError):
            raise found
        return found

    def video_info(self, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> VideoInfo:
        """Container facts of the ``video`` member (header only), probed once per sample."""
        return self._once(("video_info",), lambda: probe_video_limited(self.require("video"), timeout_s))

    def video_frames(
        self,
        n: int | None = None,
        every_s: float | None = None,
        size: int | None = None,
        max_frames: int = 64,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> VideoFrames:
        """Upright RGB frames of the ``video`` member: ``n`` spaced uniformly, or one every
        ``every_s`` seconds (at most ``max_frames``), short side ``size`` px (None: native).

        Decoded in a killable child process under ``timeout_s`` (``decode_timeout: ...``
        past it; None decodes in this process without a limit), decord first where installed,
        PyAV for what decord cannot read. Cached per sample and request: annotators asking for the
        same frames share one decode. ``.frames`` is ``(N, H, W, 3)`` uint8; ``.images()``
        gives PIL images; ``.timestamps_s`` the frame times.
        """
        request = FrameRequest(n=n, every_s=every_s, size=size, max_frames=max_frames)
        return self._once(("video_frames", request), lambda: sample_frames_limited(self.require("video"), request, timeout_s))

    def audio(self, sample_rate: int | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Audio:
        """The ``audio`` member decoded to float32 ``(channels, samples)``, resampled to
        ``sample_rate`` Hz when given; under ``timeout_s``, once per sample and rate."""
        return self._once(("audio", sample_rate), lambda: decode_audio_limited(self.require("audio"), sample_rate, timeout_s))

    def forget_pixels(self) -> None:
        """Drop the decoded image and sampled video frames (a later call decodes again). For
        annotators that keep only something derived from them, so a large batch does not
        hold every decoded picture."""
        for key in [k for k in self._decoded if k == "image" or (isinstance(k, tuple) and k[0] == "video_frames")]:
            del self._decoded[key]
