"""A sample as annotators see it: members looked up by modality, decoded once and shared."""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from PIL import Image

from ..decode import DecodeError
from ..decode.audio import Audio
from ..decode.audio_header import DEFAULT_MAX_DECODED_MB, DEFAULT_MAX_DURATION_S, read_audio_header
from ..decode.errors import check_duration
from ..decode.image import DEFAULT_MAX_PIXELS, ImageMeta, Reduced, TooLarge, decode_image, decode_reduced, decoded_bytes, image_formats
from ..decode.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, decode_audio_limited, probe_video_limited, sample_frames_limited
from ..decode.video import FrameRequest, VideoFrames, VideoInfo
from ..io.tarread import Sample

__all__ = ["SampleView"]

T = TypeVar("T")


class SampleView:
    """Wraps a :class:`Sample`; ``modalities`` maps a modality to its extensions in preference order.

    ``pixels`` says whether some annotator will read the decoded image: when none will,
    :meth:`image_meta` verifies the image with a cheaper reduced-scale decode instead.
    Images open only as the formats the ``image`` extensions name (:attr:`image_formats`).
    """

    def __init__(self, sample: Sample, modalities: Mapping[str, tuple[str, ...]], pixels: bool = True):
        self.sample = sample
        self.modalities = modalities
        self.pixels = pixels
        self._decoded: dict[Any, Any] = {}
        """Decode results (or the DecodeError) by kind: ``"image"`` (pixels), ``"reduced"``, or a
        video/audio request tuple (see :meth:`_once`)."""

    @property
    def image_formats(self) -> tuple[str, ...]:
        """The Pillow formats the ``image`` member may be opened as (see :func:`image_formats`)."""
        return image_formats(self.modalities.get("image", ()))

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

    def held_bytes(self) -> int:
        """Bytes this sample may hold until its batch ends: its members, its decoded image when
        ``pixels`` (size from the header), its decoded audio when a WAV/FLAC header says.
        Batches are cut by this, not by compressed size: a 100 KB PNG can hold 200 MB."""
        total = self.sample.nbytes
        image = self.member("image") if self.pixels else None
        if image is not None:
            total += decoded_bytes(image[1], self.image_formats)
        audio = self.member("audio")
        header = None if audio is None else read_audio_header(audio[1])
        return total + (0 if header is None else header.decoded_bytes)

    def image(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
        """The decoded upright image and its format. Decoded once per sample: a later call with
        another pixel limit checks the decoded size instead of decoding again."""
        return self._decode_once("image", decode_image, lambda found: found[0].size, max_pixels)

    def image_meta(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageMeta:
        """Upright size, mode and format of a verified decode: from :meth:`image` when pixels are
        wanted (or already decoded), else from :meth:`image_small`'s decode, once per sample."""
        if self.pixels or "image" in self._decoded:
            img, fmt = self.image(max_pixels)
            return ImageMeta(img.width, img.height, img.mode, fmt)
        return self._reduced(max_pixels).meta

    def image_small(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """A small upright grayscale copy of the image from a reduced-scale decode
        (:func:`~mmcurate.decode.image.decode_reduced`), once per sample. Always that decode,
        even when the full image is decoded too, so what is computed from it does not depend
        on the other steps of a recipe."""
        return self._reduced(max_pixels).gray

    def _reduced(self, max_pixels: int) -> Reduced:
        return self._decode_once("reduced", decode_reduced, lambda r: (r.meta.width, r.meta.height), max_pixels)

    def _decode_once(self, kind: str, decode: Callable[[bytes, int, tuple[str, ...]], T], size: Callable[[T], tuple[int, int]], max_pixels: int) -> T:
        """``decode(image bytes, max_pixels, formats)``, remembered (failures too) under ``kind``; redone
        only when an earlier call refused the image as too large and this limit admits it."""
        cached = self._decoded.get(kind)
        if cached is None or (isinstance(cached, TooLarge) and cached.pixels <= max_pixels):
            try:
                cached = decode(self.require("image"), max_pixels, self.image_formats)
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

    def video_info(
        self, timeout_s: float | None = DEFAULT_TIMEOUT_S, memory_mb: int | None = DEFAULT_MEMORY_MB, max_duration_s: float | None = None
    ) -> VideoInfo:
        """Container facts of the ``video`` member (header only), probed once per sample; a video
        longer than ``max_duration_s`` (None: any) is refused."""
        info = self._once(("video_info",), lambda: probe_video_limited(self.require("video"), timeout_s, memory_mb))
        check_duration("video", info.duration_s, max_duration_s, ", from the header")
        return info

    def video_frames(
        self,
        n: int | None = None,
        every_s: float | None = None,
        size: int | None = None,
        max_frames: int = 64,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
    ) -> VideoFrames:
        """Upright RGB frames of the ``video`` member: ``n`` spaced uniformly, or one every
        ``every_s`` seconds (at most ``max_frames``), short side ``size`` px (None: native).

        Decoded in a killable child process under ``timeout_s`` (``decode_timeout: ...``
        past it; None decodes in this process without a limit) and ``memory_mb``, decord first
        where installed, PyAV for what decord cannot read. Cached per sample and request: annotators asking for the
        same frames share one decode. ``.frames`` is ``(N, H, W, 3)`` uint8; ``.images()``
        gives PIL images; ``.timestamps_s`` the frame times.
        """
        request = FrameRequest(n=n, every_s=every_s, size=size, max_frames=max_frames)
        return self._once(("video_frames", request), lambda: sample_frames_limited(self.require("video"), request, timeout_s, memory_mb))

    def audio(
        self,
        sample_rate: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
        max_decoded_mb: int = DEFAULT_MAX_DECODED_MB,
    ) -> Audio:
        """The ``audio`` member decoded to float32 ``(channels, samples)``, resampled to
        ``sample_rate`` Hz when given; under ``timeout_s`` and ``memory_mb``, once per sample,
        rate and limits. Audio longer than ``max_duration_s`` or decoding to more than
        ``max_decoded_mb`` MiB is refused, from the header where it says (WAV, FLAC)."""
        limits = (timeout_s, memory_mb, max_duration_s, max_decoded_mb)
        return self._once(("audio", sample_rate, *limits), lambda: decode_audio_limited(self.require("audio"), sample_rate, *limits))

    def forget_pixels(self) -> None:
        """Drop the decoded image and sampled video frames (a later call decodes again). For
        annotators that keep only something derived from them, so a large batch does not
        hold every decoded picture."""
        for key in [k for k in self._decoded if k == "image" or (isinstance(k, tuple) and k[0] == "video_frames")]:
            del self._decoded[key]
