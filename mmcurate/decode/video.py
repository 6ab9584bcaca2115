"""Video decoding: container metadata and sampled frames, decord first, PyAV as fallback.

These functions decode *in the calling process*; annotators reach them through
:func:`~mmcurate.decode.sandbox.probe_video_limited` and
:func:`~mmcurate.decode.sandbox.sample_frames_limited`, which run them in a killable child process
under a time limit (decord can hang inside C code, where no Python timeout reaches).

* :func:`probe_video` reads the container header with PyAV (decord reports neither the
  codec, the rotation nor the audio streams).
* :func:`sample_frames` picks frame indices (``n`` uniformly spaced, or one every ``every_s``
  seconds), then decodes only those, resized in the decoder so that the short side is
  ``size`` pixels. decord reads the bytes from memory (``io.BytesIO``, no temporary file);
  whatever it cannot open or read (AV1, some VP9 streams, damaged files) is decoded by
  PyAV from the same bytes. Where decord is not installed (it has wheels for x86_64 Linux
  and Windows only) or ``MMCURATE_VIDEO_DECODER=pyav`` is set, PyAV decodes everything.
  Frames come back upright: both decoders apply the container's rotation (checked in
  ``tests/test_video.py``).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from typing import Any

import numpy as np

from .errors import DecodeError, one_line
from .pyav import decode_frames, probe

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
    """``"decord"`` or ``"pyav"`` (the fallback)."""

    def images(self) -> list[Any]:
        """The frames as PIL images (what open_clip's preprocessing takes)."""
        from PIL import Image

        return [Image.fromarray(f) for f in self.frames]


def probe_video(data: bytes, audio: bool = True) -> VideoInfo:
    """Container metadata of a video (the header and the first frame, for its rotation);
    ``audio=False`` reports ``has_audio`` as False."""
    if not data:
        raise DecodeError("decode_error: empty video member")
    facts = probe(data)
    if facts["rotation"] in (90, 270):  # width/height name the upright frame
        facts["width"], facts["height"] = facts["height"], facts["width"]
    return VideoInfo(**{**facts, "has_audio": audio and facts["has_audio"]})


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


def video_decoders() -> list[str]:
    """The frame decoders tried in order: decord where it is installed, then PyAV; only PyAV
    when ``MMCURATE_VIDEO_DECODER=pyav``."""
    forced = os.environ.get("MMCURATE_VIDEO_DECODER", "auto")
    if forced not in ("auto", "pyav"):
        raise ValueError(f"MMCURATE_VIDEO_DECODER must be auto or pyav, not {forced!r}")
    return ["decord", "pyav"] if forced == "auto" and find_spec("decord") is not None else ["pyav"]


def sample_frames(data: bytes, request: FrameRequest) -> VideoFrames:
    """Decode the frames ``request`` asks for; :class:`DecodeError` when no decoder can."""
    info = probe_video(data, audio=False)
    indices = frame_indices(info, request)
    width, height = target_size(info.width, info.height, request.size)
    failures = []
    for decoder in video_decoders():
        try:
            if decoder == "decord":
                frames = _decord_frames(data, indices, width, height)
            else:
                frames = decode_frames(data, indices, width, height, info.rotation)
        except Exception as exc:  # decord raises DECORDError/RuntimeError for what it cannot read
            failures.append(f"{decoder}: {one_line(exc).removeprefix('decode_error: ')}")
            continue
        times = [float(i) / info.fps if info.fps else 0.0 for i in indices[: len(frames)]]
        return VideoFrames(np.ascontiguousarray(frames), times, decoder)
    raise DecodeError(f"decode_error: cannot decode frames ({'; '.join(failures)})")


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
