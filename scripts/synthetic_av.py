"""Synthetic video and audio made with PyAV (FFmpeg bundled in its wheel), for tests, demo shards
and benchmarks: no ``ffmpeg`` command and no system FFmpeg libraries are needed.

Sources are FFmpeg's lavfi generators (``testsrc``, ``testsrc2``, ``mandelbrot``, ``smptebars``,
``sine``, ``anoisesrc``, ...) run in a PyAV filter graph and, for speech, ``espeak-ng``
(optional: only the demo-shard generator uses it). Each function returns the encoded file's
bytes, written in memory.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from fractions import Fraction
from typing import Any

import av

os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder's banner: errors only

__all__ = ["VIDEO_CODECS", "AUDIO_FORMATS", "make_audio", "make_video", "transcode_audio", "speech_wav"]

VIDEO_CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "h264": ("libx264", {"preset": "veryfast", "crf": "30"}),
    "hevc": ("libx265", {"preset": "ultrafast", "crf": "32", "x265-params": "log-level=error"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "45", "b": "0"}),
    "av1": ("libsvtav1", {"preset": "12", "crf": "50"}),
    "mpeg4": ("mpeg4", {"b": "200k"}),
}
"""Encoder and its options by codec name (fast settings, low quality: these clips are small)."""

AUDIO_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    "wav": ("pcm_s16le", {}),
    "flac": ("flac", {}),
    "mp3": ("libmp3lame", {"b": "64k"}),
    "ogg": ("vorbis", {"strict": "experimental", "b": "64k"}),  # stereo only; mono: FLAC in Ogg
    "opus": ("libopus", {"b": "32k"}),
    "m4a": ("aac", {"b": "48k"}),
}
"""Encoder and its options by file extension (``ogg``: FFmpeg's own Vorbis encoder)."""

_MUXER = {"mkv": "matroska", "webm": "webm", "mp4": "mp4", "mov": "mov", "avi": "avi", "m4a": "ipod", "ogg": "ogg", "opus": "opus", "wav": "wav", "flac": "flac", "mp3": "mp3"}
_BITEXACT = {"fflags": "+bitexact"}  # no encoder version strings: the same bytes on every run


def _run_graph(chain: list[str], sink: str) -> list[Any]:
    """Every frame of the filter ``chain`` (``name=args`` items, the first a source)."""
    graph = av.filter.Graph()
    nodes = [graph.add(*item.split("=", 1)) for item in chain] + [graph.add(sink)]
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)
    graph.configure()
    frames = []
    while True:
        try:
            frames.append(nodes[-1].pull())
        except (av.error.EOFError, BlockingIOError):
            return frames


def _chain(text: str | None) -> list[str]:
    return [part for part in (text or "").split(",") if part]


def _audio_frames(source: str, rate: int, seconds: float, channels: int, audio_filter: str | None) -> list[Any]:
    args = f"{source}:sample_rate={rate}" if "=" in source else f"{source}=sample_rate={rate}"
    layout = {1: "mono", 2: "stereo"}[channels]
    chain = [args, f"atrim=duration={seconds}", *_chain(audio_filter), f"aformat=channel_layouts={layout}"]
    return _run_graph(chain, "abuffersink")


def _encode_audio(frames: list[Any], fmt: str, rate: int, channels: int, codec: str | None, options: dict[str, str] | None) -> bytes:
    name, defaults = AUDIO_FORMATS[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=_MUXER[fmt], options=_BITEXACT) as out:
        stream = out.add_stream(codec or name, rate=rate, layout={1: "mono", 2: "stereo"}[channels])
        stream.options = {**defaults, **(options or {})} if codec is None else dict(options or {})
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        _encode_samples(out, stream, frames)
    return buf.getvalue()


def _encode_samples(out: Any, stream: Any, frames: list[Any]) -> None:
    """Encode audio ``frames`` with sample-exact timestamps (so muxers record the true length)."""
    pts = 0
    for frame in frames:
        frame.pts, frame.time_base = pts, Fraction(1, frame.sample_rate)
        pts += frame.samples
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_audio(
    fmt: str = "wav",
    seconds: float = 1.0,
    rate: int = 16000,
    channels: int = 1,
    source: str = "sine=frequency=440",
    codec: str | None = None,
    options: dict[str, str] | None = None,
    audio_filter: str | None = None,
) -> bytes:
    """A clip of lavfi audio ``source`` (``sine=frequency=F``, ``anoisesrc=amplitude=A``,
    ``anullsrc`` for silence, ...) encoded as ``fmt`` (a key of :data:`AUDIO_FORMATS`);
    ``codec`` (e.g. ``pcm_f32le``) and ``options`` replace the format's encoder and settings,
    ``audio_filter`` (e.g. ``volume=24dB``) runs after the source."""
    if fmt == "opus":
        rate = 48000  # libopus encodes 8/12/16/24/48 kHz; 48 kHz always works
    if fmt == "ogg" and channels == 1 and codec is None:
        codec = "flac"  # FFmpeg's own Vorbis encoder writes stereo only: mono Ogg holds FLAC
    frames = _audio_frames(source, rate, seconds, channels, audio_filter)
    return _encode_audio(frames, fmt, rate, channels, codec, options)


def transcode_audio(data: bytes, fmt: str, rate: int | None = None, channels: int | None = None) -> bytes:
    """Decode ``data`` and encode it again as ``fmt`` (resampled to ``rate`` Hz and mixed to
    ``channels`` when given); lossless formats keep every sample."""
    with av.open(io.BytesIO(data)) as src:
        stream = src.streams.audio[0]
        rate = rate or stream.rate
        channels = channels or stream.channels
        if fmt == "opus":
            rate = 48000
        frames = list(src.decode(stream))
    return _encode_audio(frames, fmt, rate, channels, None, None)


def _video_frames(source: str, size: tuple[int, int], rate: int, seconds: float, start_s: float, video_filter: str | None) -> list[Any]:
    width, height = size
    src = f"{source}{':' if '=' in source else '='}size={width}x{height}:rate={rate}"
    trim = [f"trim=start={start_s}", "setpts=PTS-STARTPTS"] if start_s else []
    chain = [src, *trim, *_chain(video_filter), f"trim=duration={seconds}", "format=pix_fmts=yuv420p"]
    return _run_graph(chain, "buffersink")


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
    options: dict[str, str] | None = None,
) -> bytes:
    """A clip of lavfi ``source`` (e.g. ``testsrc``, ``mandelbrot``, ``smptebars``).

    ``video_filter`` is applied after the source (``scale=...,pad=...`` for letterboxing),
    ``start_s`` skips the first seconds of the source (a trimmed copy), ``rotation`` writes a
    display matrix (degrees, as FFmpeg's ``rotate`` tag; mp4/mov), ``audio`` adds a 440 Hz
    tone track, ``options`` go after the codec's (e.g. ``{"g": "30"}``: a keyframe every 30
    frames).
    """
    frames = _video_frames(source, size, rate, seconds, start_s, video_filter)
    if not frames:
        raise RuntimeError(f"the filter graph for {source!r} made no frames")
    name, defaults = VIDEO_CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format=_MUXER[container], options=_BITEXACT) as out:
        stream = out.add_stream(name, rate=rate, options={**defaults, **(options or {})})
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        if rotation:
            stream.set_display_rotation(rotation)
        tone = None
        if audio:
            tone_codec = ("aac", {"b": "32k"}) if container in ("mp4", "mov", "mkv") else ("libopus", {"b": "24k"})
            tone_rate = 16000 if tone_codec[0] == "aac" else 48000
            tone = out.add_stream(tone_codec[0], rate=tone_rate, layout="mono", options=tone_codec[1])
        for i, frame in enumerate(frames):
            frame.pts, frame.time_base = i, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if tone is not None:
            _encode_samples(out, tone, _audio_frames("sine=frequency=440", tone.rate, seconds, 1, None))
    return buf.getvalue()


def speech_wav(text: str, voice: str = "en", speed: int = 170) -> bytes:
    """``text`` spoken by espeak-ng, as 22.05 kHz mono 16-bit WAV."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed for speech (apt-get install espeak-ng)")
    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True)
    return proc.stdout
