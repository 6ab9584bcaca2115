"""PyAV backends: FFmpeg's decoders as bundled in the ``av`` wheel (no system FFmpeg needed).

* :func:`decode_pcm`: every sample of an audio member, float32 ``(channels, samples)``.
* :func:`probe`: a video's container facts (codec, rate, length, size, rotation, audio).
* :func:`decode_frames`: chosen frames of a video, resized and turned upright; the video
  fallback decoder (and the only one where decord has no wheel: aarch64 Linux, macOS).
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .errors import DecodeError, one_line

__all__ = ["decode_pcm", "decode_frames", "probe"]

SEEK_GAP_S = 2.0
"""A wanted frame further ahead than this is reached by seeking to the keyframe before it."""


def _reason(exc: Exception) -> str:
    """FFmpeg's message without PyAV's errno and file name ("Invalid data found ...")."""
    strerror = getattr(exc, "strerror", None)
    return " ".join(strerror.split()) if strerror else one_line(exc)


@contextmanager
def _opened(data: bytes, what: str) -> Iterator[Any]:
    import av

    try:
        container = av.open(io.BytesIO(data), "r")
    except av.error.FFmpegError as exc:
        raise DecodeError(f"decode_error: cannot open {what} ({_reason(exc)})") from None
    try:
        yield container
    finally:
        container.close()


def decode_pcm(data: bytes) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``data``: float32 ``(channels, samples)`` and its rate."""
    import av

    with _opened(data, "audio") as container:
        if not container.streams.audio:
            raise DecodeError("decode_error: no audio stream")
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # keeps the layout and rate of the first frame
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in to_float.resample(frame)]
            chunks += [f.to_ndarray() for f in to_float.resample(None)]
        except av.error.FFmpegError as exc:
            raise DecodeError(f"decode_error: cannot decode audio ({_reason(exc)})") from None
        rate = int(stream.rate or 0)
    if not chunks or not rate:
        raise DecodeError("decode_error: audio has no samples")
    return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32), rate


def probe(data: bytes) -> dict[str, Any]:
    """Container facts of the first video stream: ``duration_s``, ``fps``, ``frames``,
    ``width``, ``height`` (as stored), ``codec``, ``rotation`` (the display matrix's
    counter-clockwise turn in degrees, read off the first frame) and ``has_audio``."""
    import av

    with _opened(data, "video") as container:
        has_audio = bool(container.streams.audio)
        if not container.streams.video:
            raise DecodeError("decode_error: no video stream" + (" (audio only)" if has_audio else ""))
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise DecodeError(f"decode_error: no readable video stream ({_reason(exc)})") from None
        if first is None:
            raise DecodeError("decode_error: video has no frames")
        return {
            "duration_s": duration,
            "fps": fps,
            "frames": int(stream.frames or round(duration * fps)),
            "width": int(stream.codec_context.width or first.width),
            "height": int(stream.codec_context.height or first.height),
            "codec": stream.codec_context.codec.canonical_name,
            "rotation": int(round(first.rotation / 90.0)) % 4 * 90,
            "has_audio": has_audio,
        }


def decode_frames(data: bytes, indices: np.ndarray, width: int, height: int, rotation: int) -> np.ndarray:
    """Frames ``indices`` (ascending) as upright RGB ``(N, height, width, 3)`` uint8. Frame
    numbers come from timestamps; far jumps seek to the keyframe before the next wanted frame."""
    import av

    turned = rotation in (90, 270)
    stored_w, stored_h = (height, width) if turned else (width, height)
    out: list[np.ndarray] = []
    with _opened(data, "video") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        tb, start = stream.time_base, stream.start_time or 0
        frames: Iterator[Any] = iter(())
        position = -1
        try:
            for target in indices.tolist():
                if position < 0 or target - position > SEEK_GAP_S * fps:
                    container.seek(start + int(target / fps / tb), stream=stream, backward=True)
                    frames = container.decode(stream)
                for frame in frames:
                    position = round(float((frame.pts - start) * tb) * fps) if frame.pts is not None else position + 1
                    if position >= target:
                        picture = frame.to_ndarray(format="rgb24", width=stored_w, height=stored_h)
                        out.append(np.rot90(picture, k=rotation // 90) if rotation else picture)
                        break
                else:
                    break  # the stream ended before this frame
        except av.error.FFmpegError as exc:
            raise DecodeError(f"decode_error: cannot decode frames ({_reason(exc)})") from None
    if not out:
        raise DecodeError("decode_error: video has no frames")
    return np.stack(out)
