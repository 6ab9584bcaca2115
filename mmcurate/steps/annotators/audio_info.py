"""``audio_info``: duration, rate, channels, loudness, silence and clipping of the audio
member, and a hash of its decoded PCM (exact dedup across containers and codecs' wrappers)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ...decode import DecodeError
from ...decode.audio import Audio
from ...decode.audio_header import DEFAULT_MAX_DECODED_MB, DEFAULT_MAX_DURATION_S
from ...decode.sandbox import TimeLimit
from ..sampleview import SampleView
from .base import Annotator, Row

__all__ = ["AudioInfo", "AudioInfoConfig", "loudness_lufs", "pcm_sha256"]


@dataclass(frozen=True)
class AudioInfoConfig(TimeLimit):
    silence_db: float = -60.0
    """A 20 ms window whose RMS (all channels) is below this many dBFS counts as silent."""
    clip_level: float = 0.999
    """Samples at or above this magnitude (full scale 1.0) count as clipped."""
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S
    """Longer audio is refused (from the header for WAV and FLAC, else after decoding); null: any length."""
    max_decoded_mb: int = DEFAULT_MAX_DECODED_MB
    """Audio that decodes to more float32 samples than this many MiB is refused, likewise."""


def pcm_sha256(audio: Audio) -> str:
    """SHA-256 of the decoded samples (float32, channels interleaved) with rate and channel
    count: equal for the same sound in WAV, FLAC or any other lossless wrapper."""
    digest = hashlib.sha256(f"{audio.sample_rate}:{audio.channels}:".encode())
    digest.update(np.ascontiguousarray(audio.waveform.T, dtype="<f4").tobytes())
    return digest.hexdigest()


def loudness_lufs(audio: Audio) -> float | None:
    """Integrated loudness (ITU-R BS.1770-4, gated) via pyloudnorm; None when undefined
    (shorter than one 400 ms block, silent, or more channels than the standard weights)."""
    import pyloudnorm

    try:
        value = float(pyloudnorm.Meter(audio.sample_rate).integrated_loudness(audio.waveform.T.astype(np.float64)))
    except (ValueError, IndexError):
        return None
    return value if math.isfinite(value) else None


def _silence_fraction(audio: Audio, silence_db: float) -> float:
    window = max(1, audio.sample_rate // 50)  # 20 ms
    usable = audio.waveform.shape[1] // window * window
    if usable == 0:
        return float(np.sqrt(np.mean(audio.waveform.astype(np.float64) ** 2)) < 10 ** (silence_db / 20))
    blocks = audio.waveform[:, :usable].astype(np.float64).reshape(audio.channels, -1, window)
    rms = np.sqrt((blocks**2).mean(axis=(0, 2)))
    return float((rms < 10 ** (silence_db / 20)).mean())


class AudioInfo(Annotator):
    """Decodes the whole member once (PyAV, native rate and channels)."""

    name = "audio_info"
    Config = AudioInfoConfig
    needs_pixels = False  # image pixels, that is
    columns = {
        "duration_s": pa.float64(),
        "sample_rate": pa.int32(),
        "channels": pa.int16(),
        "loudness_lufs": pa.float32(),
        "silence_fraction": pa.float32(),
        "clipping_fraction": pa.float32(),
        "audio_pcm_sha256": pa.string(),
        "audio_bytes": pa.int64(),
    }

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            c = self.config
            audio = sample.audio(None, c.timeout_s, c.memory_mb, c.max_duration_s, c.max_decoded_mb)
        except DecodeError as exc:
            return {"error": str(exc)}
        return {
            "duration_s": audio.duration_s,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "loudness_lufs": loudness_lufs(audio),
            "silence_fraction": _silence_fraction(audio, self.config.silence_db),
            "clipping_fraction": float((np.abs(audio.waveform) >= self.config.clip_level).mean()),
            "audio_pcm_sha256": pcm_sha256(audio),
            "audio_bytes": len(sample.require("audio")),
        }
