"""``image_info``: size, aspect ratio, mode and format of the decoded image."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ...decode import DecodeError
from ...decode.image import DEFAULT_MAX_PIXELS
from ..sampleview import SampleView
from .base import Annotator, Row


@dataclass(frozen=True)
class ImageInfoConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images with more pixels are refused from their header (decompression-bomb guard)."""


class ImageInfo(Annotator):
    """Decodes each image once with Pillow (EXIF orientation applied) and records its shape.

    It reads no pixels itself, so in a group where no other annotator does, JPEGs are verified
    with a reduced-scale decode (see :func:`mmcurate.decode.image.decode_reduced`).
    """

    name = "image_info"
    needs_pixels = False
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
            meta = sample.image_meta(self.config.max_pixels)
        except DecodeError as exc:
            return {"error": str(exc)}
        width, height = meta.width, meta.height
        return {
            "width": width,
            "height": height,
            "aspect_ratio": max(width, height) / max(1, min(width, height)),
            "mode": meta.mode,
            "format": meta.format,
            "image_bytes": len(sample.require("image")),
        }
