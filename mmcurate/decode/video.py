"""Video decoding: container metadata and sampled frames, decord first, torchcodec as fallback.

These functions decode *in the calling process*; annotators reach them through
:func:`~mmcurate.decode.sandbox.probe_video_limited` and
:func:`~mmcurate.decode.sandbox.sample_frames_limited`, which run them in a killable child process
under a time limit (decord can hang inside C code, where no Python timeout reaches).

* :func:`probe_video` reads the container header with torchcodec (decord reports neither the
  codec, the rotation nor the audio streams).
* :func:`sample_frames` picks frame indices (``n`` uniformly spaced, or one every ``every_s``
  seconds), then decodes only those, resized in the decoder so that the short side is
  ``size`` pixels. decord reads the bytes from memory (``io.BytesIO``, no temporary file);
  whatever it cannot open or read (AV1, some VP9 streams, damaged files) is decoded by
  torchcodec from the same bytes. Frames come back upright: both decoders apply the
  container's rotation (checked in ``tests/test_video.py``).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import DecodeError, one_line

__all__ = ["FrameRequest", "VideoFrames", "VideoInfo", "frame_indices", "probe_video", "sample_frames", "target_size"]


@dataclass(frozen=True)
class VideoInfo:
    """Container facts of a video member; ``width``/``height`` are of the upright frame."""

    duration_s: float
    fps: float
    frames: int
    width: int
    height: int
    codec: str
    rotation: int
    """Display rotation from the container, degrees in {0, 90, 180, 270}."""
    has_audio: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FrameRequest:
    """Which frames to sample, and how small: exactly one of ``n`` and ``every_s``.

    ``n`` frames spaced uniformly over the video (the middle of ``n`` equal spans), or one
    frame every ``every_s`` seconds from the start, at most ``max_frames``. ``size`` is the
    short side of the returned frames in pixels (aspect kept, never upscaled); None keeps
    the native size.
    """

    n: int | None = None
    every_s: float | None = None
    size: int | None = None
    max_frames: int = 64

    def __post_init__(self) -> None:
        if (self.n is None) == (self.every_s is None):
            raise ValueError("give exactly one of n (frames spaced uniformly) and every_s (seconds between frames)")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be >= 1, not {self.n}")
        if self.every_s is not None and not self.every_s > 0:
            raise ValueError(f"every_s must be > 0, not {self.every_s}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be >= 1 pixel, not {self.size}")
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, not {self.max_frames}")


@dataclass
class VideoFrames:
    """Sampled upright RGB frames, ``(N, H, W, 3)`` uint8, with their times and decoder."""

    frames: np.ndarray
    timestamps_s: list[float]
    decoder: str
    """``"decord"`` or ``"torchcodec"`` (the fallback)."""

    def images(self) -> list[Any]:
        """The frames as PIL images (what open_clip's preprocessing takes)."""
        from PIL import Image

        return [Image.fromarray(f) for f in self.frames]


def _normal_rotation(value: float | None) -> int:
    return int(round((value or 0) / 90.0)) % 4 * 90


def _open_torchcodec(data: bytes, **kwargs: Any) -> Any:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(data, dimension_order="NHWC", **kwargs)


def probe_video(data: bytes, audio: bool = True) -> VideoInfo:
    """Container metadata of a video (header only, no frame decoded); ``audio=False`` skips
    the audio-stream probe (``has_audio`` is then False)."""
    if not data:
        raise DecodeError("decode_error: empty video member")
    try:
        meta = _open_torchcodec(data, seek_mode="approximate").metadata
    except Exception as exc:  # torchcodec raises RuntimeError/ValueError with FFmpeg's message
        if "best video stream is unknown" in str(exc):  # the container opened: no video in it
            raise DecodeError("decode_error: no video stream" + (" (audio only)" if _has_audio(data) else "")) from None
        raise DecodeError(f"decode_error: no readable video stream ({one_line(exc)})") from None
    fps = float(meta.average_fps or 0.0)
    duration = float(meta.duration_seconds or 0.0)
    frames = int(meta.num_frames or (round(duration * fps) if fps else 0))
    return VideoInfo(
        duration_s=duration,
        fps=fps,
        frames=frames,
        width=int(meta.width or 0),
        height=int(meta.height or 0),
        codec=str(meta.codec or "unknown"),
        rotation=_normal_rotation(meta.rotation),
        has_audio=audio and _has_audio(data),
    )


def _has_audio(data: bytes) -> bool:
    from torchcodec.decoders import AudioDecoder

    try:
        AudioDecoder(data)
    except Exception:  # no audio stream (torchcodec gives no cheaper public probe)
        return False
    return True


def frame_indices(info: VideoInfo, request: FrameRequest) -> np.ndarray:
    """Indices of the frames ``request`` samples from a video described by ``info``."""
    if info.frames <= 0:
        raise DecodeError("decode_error: video has no frames")
    if request.n is not None:
        count = min(request.n, request.max_frames, info.frames)
        picks = (np.arange(count) + 0.5) * info.frames / count
    else:
        step = request.every_s * (info.fps or 1.0)
        count = min(request.max_frames, max(1, math.ceil(info.frames / step)))
        picks = np.arange(count) * step
    return np.unique(np.clip(np.floor(picks).astype(np.int64), 0, info.frames - 1))


def target_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) scaled so the short side is ``size`` (aspect kept, never upscaled)."""
    short = min(width, height)
    if size is None or short <= size:
        return width, height
    scale = size / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def sample_frames(data: bytes, request: FrameRequest) -> VideoFrames:
    """Decode the frames ``request`` asks for; :class:`DecodeError` when neither decoder can."""
    info = probe_video(data, audio=False)
    indices = frame_indices(info, request)
    width, height = target_size(info.width, info.height, request.size)
    try:
        frames = _decord_frames(data, indices, width, height)
        decoder = "decord"
    except Exception as first:  # decord raises DECORDError/RuntimeError for what it cannot read
        try:
            frames = _torchcodec_frames(data, indices, width, height, info)
        except Exception as second:
            raise DecodeError(f"decode_error: cannot decode frames (decord: {one_line(first)}; torchcodec: {one_line(second)})") from None
        decoder = "torchcodec"
    times = [float(i) / info.fps if info.fps else 0.0 for i in indices]
    return VideoFrames(np.ascontiguousarray(frames), times, decoder)


def _decord_frames(data: bytes, indices: np.ndarray, width: int, height: int) -> np.ndarray:
    import decord

    # decord applies the rotation; width/height name the upright frame.
    reader = decord.VideoReader(io.BytesIO(data), width=width, height=height, num_threads=1)
    if len(reader) <= int(indices[-1]):
        indices = indices[indices < len(reader)]
        if not len(indices):
            raise DecodeError("decord found no frames")
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
        if frames.shape[1:] == (height, width, 3):
            return frames
    except decord.DECORDError:
        pass
    # decord 0.6 mis-sizes its RGB output for some widths (48, 72, ... px: 4 channels, or a
    # size-check error): decode at the native size and resize here instead.
    native = decord.VideoReader(io.BytesIO(data), num_threads=1).get_batch(indices.tolist()).asnumpy()
    return _resize(native, width, height)


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0))
    return out


def _torchcodec_frames(data: bytes, indices: np.ndarray, width: int, height: int, info: VideoInfo) -> np.ndarray:
    from torchcodec.transforms import Resize

    transforms = [Resize(size=(height, width))] if (width, height) != (info.width, info.height) else None
    decoder = _open_torchcodec(data, seek_mode="approximate", transforms=transforms)
    available = len(decoder)
    indices = indices[indices < available] if available else indices
    if not len(indices):
        raise DecodeError("torchcodec found no frames")
    return decoder.get_frames_at(indices.tolist()).data.numpy()

