"""``image_info``: size, aspect ratio, mode and format of the decoded image."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ..decode import DecodeError
from ..decode.image import DEFAULT_MAX_PIXELS
from ..sampleview import SampleView
from .base import Annotator, Row


@dataclass(frozen=True)
class ImageInfoConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images with more pixels are refused from their header (decompression-bomb guard)."""


class ImageInfo(Annotator):
    """Decodes each image once with Pillow (EXIF orientation applied) and records its shape."""

    name = "image_info"
    Config = ImageInfoConfig
    columns = {
        "width": pa.int32(),
        "height": pa.int32(),
        "aspect_ratio": pa.float32(),
        "mode": pa.string(),
        "format": pa.string(),
        "image_bytes": pa.int64(),
    }

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            img, fmt = sample.image(self.config.max_pixels)
        except DecodeError as exc:
            return {"error": str(exc)}
        width, height = img.size
        return {
            "width": width,
            "height": height,
            "aspect_ratio": max(width, height) / max(1, min(width, height)),
            "mode": img.mode,
            "format": fmt,
            "image_bytes": len(sample.require("image")),
        }
