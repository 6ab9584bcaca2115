"""Audio decoding with PyAV (FFmpeg's decoders, bundled in the ``av`` wheel).

Any container and codec FFmpeg reads works: wav (integer and float PCM), flac, mp3,
ogg/vorbis, opus, m4a/aac, ... Samples come back as float32 in [-1, 1], shape
``(channels, samples)``, optionally resampled (polyphase, :func:`resample`). Annotators call
:func:`decode_audio` through :func:`mmcurate.decode.sandbox.decode_audio_limited` (a killable
child process under a time limit), like video.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

from .errors import DecodeError
from .pyav import decode_pcm

__all__ = ["Audio", "decode_audio", "resample"]


@dataclass
class Audio:
    """Decoded audio: float32 ``(channels, samples)`` and the sample rate in Hz."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration_s(self) -> float:
        return self.waveform.shape[1] / self.sample_rate if self.sample_rate else 0.0


def resample(waveform: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """``waveform`` (channels, samples) at ``new_rate`` Hz: polyphase filtering (Kaiser
    window), ``ceil(samples * new_rate / rate)`` samples, like ``torchaudio.functional.resample``."""
    from scipy.signal import resample_poly

    step = gcd(rate, new_rate)
    out = resample_poly(waveform, new_rate // step, rate // step, axis=1)
    return np.ascontiguousarray(out, dtype=np.float32)


def decode_audio(data: bytes, sample_rate: int | None = None) -> Audio:
    """Decode every sample of ``data``; resample to ``sample_rate`` Hz when given."""
    if not data:
        raise DecodeError("decode_error: empty audio member")
    waveform, rate = decode_pcm(data)
    if sample_rate is not None and sample_rate != rate:
        waveform, rate = resample(waveform, rate, sample_rate), sample_rate
    return Audio(waveform, int(rate))
