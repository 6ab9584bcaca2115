"""Audio decoding with torchaudio (which decodes through torchcodec and FFmpeg's libraries).

Any container and codec the installed FFmpeg reads works: wav (integer and float PCM),
flac, mp3, ogg/vorbis, opus, m4a/aac, ... Samples come back as float32 in [-1, 1],
shape ``(channels, samples)``, optionally resampled with ``torchaudio.functional.resample``.
Annotators call :func:`decode_audio` through :func:`mmcurate.decode.sandbox.decode_audio_limited`
(a killable child process under a time limit), like video.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .errors import DecodeError, one_line

__all__ = ["Audio", "decode_audio"]


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


def decode_audio(data: bytes, sample_rate: int | None = None) -> Audio:
    """Decode every sample of ``data``; resample to ``sample_rate`` Hz when given."""
    if not data:
        raise DecodeError("decode_error: empty audio member")
    import torchaudio

    try:
        waveform, rate = torchaudio.load(io.BytesIO(data))
    except Exception as exc:  # torchcodec raises RuntimeError/ValueError with FFmpeg's message
        raise DecodeError(f"decode_error: cannot decode audio ({one_line(exc)})") from None
    if waveform.ndim != 2 or waveform.shape[1] == 0:
        raise DecodeError("decode_error: audio has no samples")
    if sample_rate is not None and sample_rate != rate:
        waveform = torchaudio.functional.resample(waveform, rate, sample_rate)
        rate = sample_rate
    return Audio(np.ascontiguousarray(waveform.numpy(), dtype=np.float32), int(rate))
