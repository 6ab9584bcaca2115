"""``video_info``: container facts of the video member (duration, rate, size, codec, ...)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ...decode import DecodeError
from ...decode.sandbox import TimeLimit
from ..sampleview import SampleView
from .base import Annotator, Row


@dataclass(frozen=True)
class VideoInfoConfig(TimeLimit):
    """``timeout_s`` and ``memory_mb`` bound reading one video's container header."""

    max_duration_s: float | None = None
    """Videos longer than this (from the header) are refused; null: any length."""


class VideoInfo(Annotator):
    """Reads the container header only (PyAV); width and height are of the upright frame
    (``rotation`` applied), so ``width >= 256 and height >= 256`` bounds the short side."""

    name = "video_info"
    Config = VideoInfoConfig
    needs_pixels = False  # image pixels, that is
    columns = {
        "duration_s": pa.float64(),
        "fps": pa.float64(),
        "frames": pa.int64(),
        "width": pa.int32(),
        "height": pa.int32(),
        "codec": pa.string(),
        "rotation": pa.int16(),
        "has_audio": pa.bool_(),
        "video_bytes": pa.int64(),
    }

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            info = sample.video_info(self.config.timeout_s, self.config.memory_mb, self.config.max_duration_s)
        except DecodeError as exc:
            return {"error": str(exc)}
        return {**info.to_dict(), "video_bytes": len(sample.require("video"))}
