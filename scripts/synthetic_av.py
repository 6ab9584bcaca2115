"""Synthetic video and audio made with the ``ffmpeg`` command, for tests, demo shards and benchmarks.

Sources are FFmpeg's lavfi generators (``testsrc``, ``testsrc2``, ``mandelbrot``, ``smptebars``,
``sine``, ``anoisesrc``, ...) and, for speech, ``espeak-ng`` (optional: only the demo-shard
generator uses it). Each function returns the encoded file's bytes; muxers that must seek
(mp4, mov) write to a temporary file first.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["VIDEO_CODECS", "AUDIO_FORMATS", "ffmpeg", "make_audio", "make_video", "remux", "speech_wav"]

VIDEO_CODECS: dict[str, list[str]] = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-crf", "32", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "45", "-b:v", "0", "-pix_fmt", "yuv420p"],
    "av1": ["-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1", "-crf", "50", "-pix_fmt", "yuv420p"],
    "mpeg4": ["-c:v", "mpeg4", "-q:v", "12", "-pix_fmt", "yuv420p"],
}
"""Encoder arguments by codec name (fast settings, low quality: these clips are small)."""

AUDIO_FORMATS: dict[str, list[str]] = {
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-q:a", "6"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "2"],
    "opus": ["-c:a", "libopus", "-b:a", "32k"],
    "m4a": ["-c:a", "aac", "-b:a", "48k"],
}
"""Encoder arguments by file extension."""

_MUXER = {"mkv": "matroska", "webm": "webm", "mp4": "mp4", "mov": "mov", "avi": "avi", "m4a": "ipod", "ogg": "ogg", "opus": "opus"}


def ffmpeg(args: list[str], out_ext: str) -> bytes:
    """Run ``ffmpeg -y ARGS OUT`` into a temporary ``OUT.out_ext`` and return its bytes."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("the ffmpeg command is needed (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"out.{out_ext}"
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
        if out_ext in _MUXER:
            cmd += ["-f", _MUXER[out_ext]]
        proc = subprocess.run([*cmd, str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed ({' '.join(cmd)}): {proc.stderr.strip()[-500:]}")
        return out.read_bytes()


def make_video(
    seconds: float = 2.0,
    size: tuple[int, int] = (96, 64),
    rate: int = 10,
    codec: str = "h264",
    container: str = "mp4",
    source: str = "testsrc",
    audio: bool = False,
    video_filter: str | None = None,
    rotation: int | None = None,
    start_s: float = 0.0,
    encoder_args: list[str] | None = None,
) -> bytes:
    """A clip of lavfi ``source`` (e.g. ``testsrc``, ``mandelbrot``, ``smptebars``).

    ``video_filter`` is applied after the source (``pad=...`` for letterboxing), ``start_s``
    skips the first seconds of the source (a trimmed copy), ``rotation`` writes display-matrix
    rotation metadata (mp4/mov), ``audio`` adds a 440 Hz tone track, ``encoder_args`` go
    after the codec's (e.g. ``["-g", "30"]`` for a keyframe every 30 frames).
    """
    width, height = size
    src = f"{source}{':' if '=' in source else '='}size={width}x{height}:rate={rate}"
    args = ["-f", "lavfi", "-i", src]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000"]
    filters = ([f"trim=start={start_s}", "setpts=PTS-STARTPTS"] if start_s else []) + ([video_filter] if video_filter else [])
    if filters:
        args += ["-vf", ",".join(filters)]
    args += ["-t", f"{seconds}", *VIDEO_CODECS[codec], *(encoder_args or [])]
    if audio:
        args += ["-c:a", "aac", "-b:a", "32k"] if container in ("mp4", "mov", "mkv") else ["-c:a", "libopus", "-b:a", "24k"]
    data = ffmpeg(args, container)
    if rotation is not None:  # FFmpeg 5 writes the display matrix only when stream-copying
        data = remux(data, container, ["-c", "copy", "-metadata:s:v:0", f"rotate={rotation}"])
    return data


def remux(data: bytes, container: str, args: list[str], out: str | None = None) -> bytes:
    """Run ``data`` (a ``container`` file) through ``ffmpeg -i IN ARGS OUT.out`` (``out``
    defaults to ``container``)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"in.{container}"
        src.write_bytes(data)
        return ffmpeg(["-i", str(src), *args], out or container)


def make_audio(
    fmt: str = "wav",
    seconds: float = 1.0,
    rate: int = 16000,
    channels: int = 1,
    source: str = "sine=frequency=440",
    codec_args: list[str] | None = None,
) -> bytes:
    """A clip of lavfi audio ``source`` (``sine=frequency=F``, ``anoisesrc=amplitude=A``,
    ``anullsrc`` for silence, ...) encoded as ``fmt`` (a key of :data:`AUDIO_FORMATS`)."""
    if fmt == "opus":
        rate = 48000  # libopus encodes 8/12/16/24/48 kHz; 48 kHz always works
    args = ["-f", "lavfi", "-i", f"{source}:sample_rate={rate}" if "=" in source else f"{source}=sample_rate={rate}"]
    args += ["-t", f"{seconds}", "-ac", str(channels), *(codec_args or AUDIO_FORMATS[fmt])]
    return ffmpeg(args, fmt)


def speech_wav(text: str, voice: str = "en", speed: int = 170) -> bytes:
    """``text`` spoken by espeak-ng, as 22.05 kHz mono 16-bit WAV."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed for speech (apt-get install espeak-ng)")
    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True)
    return proc.stdout
