"""Audio size from the container header, read in pure Python before any decoder runs.

A 300 KB FLAC of silence can decode to gigabytes: :func:`check_audio_header` refuses a member
whose header says it is longer than ``max_duration_s`` or decodes to more than
``max_decoded_bytes`` (float32 samples, as :func:`~mmcurate.decode.audio.decode_audio`
returns them), without decoding it. WAV (RIFF, RF64) and FLAC headers are read here; for
other containers the size is known only after decoding, which :func:`check_decoded_audio`
bounds (and the decode child's memory limit before it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import DecodeError, check_duration

__all__ = [
    "DEFAULT_MAX_DECODED_MB",
    "DEFAULT_MAX_DURATION_S",
    "AudioHeader",
    "check_audio_header",
    "check_decoded_audio",
    "read_audio_header",
]

DEFAULT_MAX_DURATION_S = 3600.0
"""Longest audio member decoded by default (seconds)."""
DEFAULT_MAX_DECODED_MB = 128
"""Largest decoded audio member by default (MiB of float32 samples: 11 minutes of 48 kHz
stereo, 35 of 16 kHz mono). The decoded samples, and the annotators' work on them, live in
the worker; this keeps one member well inside a 1 GB worker."""
_FLOAT32 = 4
_MB = 1 << 20


@dataclass(frozen=True)
class AudioHeader:
    """What a container header says: sample rate (Hz), channels, and frames (samples per channel)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def decoded_bytes(self) -> int:
        return self.frames * self.channels * _FLOAT32


def _wav(data: bytes) -> AudioHeader | None:
    """RIFF/RF64 WAVE: the ``fmt `` chunk, and the ``data`` chunk's size (RF64: from ``ds64``)."""
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RF64"):
        return None
    pos, fmt, data_size, big_data_size = 12, None, None, None
    while pos + 8 <= len(data) and (fmt is None or data_size is None):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"ds64" and pos + 24 <= len(data):
            big_data_size = struct.unpack_from("<Q", data, pos + 16)[0]
        elif chunk == b"fmt " and pos + 24 <= len(data):
            fmt = struct.unpack_from("<HHIIHH", data, pos + 8)
        elif chunk == b"data":
            data_size = big_data_size if size == 0xFFFFFFFF else size  # 0xFFFFFFFF: RF64, or a streamed WAV (unknown)
        pos += 8 + size + (size & 1)
    if fmt is None or data_size is None:
        return None
    _, channels, rate, _, block_align, _ = fmt
    if not (channels and rate and block_align):
        return None
    return AudioHeader(rate, channels, data_size // block_align)


def _flac(data: bytes) -> AudioHeader | None:
    """FLAC's STREAMINFO block (after an optional ID3v2 tag); None when it leaves the length open."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2: a 10-byte header and a syncsafe size
        start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
    info = data[start + 8 : start + 26]
    if data[start : start + 4] != b"fLaC" or data[start + 4] & 0x7F != 0 or len(info) < 18:
        return None
    bits = int.from_bytes(info[10:18], "big")  # rate (20 bits), channels-1 (3), depth-1 (5), frames (36)
    rate, channels, frames = bits >> 44, ((bits >> 41) & 7) + 1, bits & ((1 << 36) - 1)
    return AudioHeader(rate, channels, frames) if rate and frames else None


def read_audio_header(data: bytes) -> AudioHeader | None:
    """Rate, channels and length from a WAV or FLAC header; None for other containers and
    for headers that do not say."""
    return _wav(data) or _flac(data)


def _refuse(duration_s: float, decoded_bytes: int, max_duration_s: float | None, max_decoded_bytes: int, where: str) -> None:
    check_duration("audio", duration_s, max_duration_s, where)
    if decoded_bytes > max_decoded_bytes:
        raise DecodeError(f"decode_error: audio too large ({decoded_bytes / _MB:.0f} MiB decoded > {max_decoded_bytes / _MB:g} MiB{where})")


def check_audio_header(data: bytes, max_duration_s: float | None, max_decoded_bytes: int) -> None:
    """:class:`DecodeError` when ``data``'s header says it is longer than ``max_duration_s``
    (None: no limit) or decodes to more than ``max_decoded_bytes``; nothing when it is within
    both or its header does not say."""
    header = read_audio_header(data)
    if header is not None:
        _refuse(header.duration_s, header.decoded_bytes, max_duration_s, max_decoded_bytes, ", from the header")


def check_decoded_audio(duration_s: float, decoded_bytes: int, max_duration_s: float | None, max_decoded_bytes: int) -> None:
    """The same limits on decoded audio (for containers whose header did not say)."""
    _refuse(duration_s, decoded_bytes, max_duration_s, max_decoded_bytes, "")
