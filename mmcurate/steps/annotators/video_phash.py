"""``video_phash``: one 64-bit pHash per sampled frame, for video-level near-duplicate search.

Frames are sampled one every ``every_s`` seconds from the start (so a trimmed copy shares
most of its frames' times with the original) and hashed exactly as the image ``phash``
annotator hashes an image (:mod:`mmcurate.steps.perceptual`). Uniform borders of any colour that
stay in every sampled frame (letterboxing, pillarboxing, padding) are cropped first, by the
image rule (:func:`mmcurate.steps.perceptual.border_box`), so a letterboxed copy hashes like its
source. Frames come upright (rotation side data applied), so a copy stored turned and flagged to
be shown upright matches; ``turns`` also hashes every frame turned by quarter turns, so a copy
flagged to be shown turned (or re-encoded turned) matches too. Flat frames (a fade to black, a
blank title card) carry no pattern to compare and are left out. The ``video_phash`` dedup method
groups videos by these lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from .. import perceptual
from ...decode import DecodeError
from ...decode.sandbox import TimeLimit
from ...decode.video import FrameRequest
from ..sampleview import SampleView
from .base import Annotator, Row

__all__ = ["VideoPHash", "VideoPHashConfig", "static_borders"]

_FLAT_STD = 2.0
"""Thumbnails with a smaller grey-level standard deviation are flat: not hashed."""


@dataclass(frozen=True)
class VideoPHashConfig(TimeLimit):
    every_s: float = 1.0
    """Seconds between sampled frames."""
    max_frames: int = 32
    """At most this many frames per video (the first ``max_frames * every_s`` seconds)."""
    size: int = 64
    """Short side of the decoded frames in pixels (the hash reads a 32x32 thumbnail)."""
    crop_borders: bool = True
    """Crop uniform borders that stay in every sampled frame before hashing."""
    turns: bool = True
    """Also hash each hashed frame turned by 90, 180 and 270 degrees into ``video_phash_turns``, so
    a copy shown turned (a rotation flag added to the same stream) matches."""

    def __post_init__(self) -> None:
        super().__post_init__()
        FrameRequest(every_s=self.every_s, size=self.size, max_frames=self.max_frames)  # same checks


def static_borders(gray: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns to keep of ``(N, H, W)`` luma frames: inside the borders that
    :func:`~mmcurate.steps.perceptual.border_box` finds both in the brightest and in the darkest
    value each pixel takes over the frames (a border stays one colour in every frame; content
    that is flat at the edge in some frames only is kept)."""
    boxes = [perceptual.border_box(np.ascontiguousarray(f)) for f in (gray.max(axis=0), gray.min(axis=0))]
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return slice(top, bottom), slice(left, right)


class VideoPHash(Annotator):
    """Columns ``video_phash`` (list of uint64, in time order), ``video_phash_frames`` (frames
    sampled, flat ones included) and, with ``turns``, ``video_phash_turns`` (the hashed frames
    turned a quarter, a half and three quarters counter-clockwise: three lists of
    ``video_phash``'s length, one after the other)."""

    name = "video_phash"
    version = "3"
    Config = VideoPHashConfig
    needs_pixels = False  # image pixels, that is
    columns = {"video_phash": pa.list_(pa.uint64()), "video_phash_frames": pa.int32(), "video_phash_turns": pa.list_(pa.uint64())}

    @classmethod
    def columns_for(cls, config: VideoPHashConfig) -> dict[str, pa.DataType]:
        return {c: t for c, t in cls.columns.items() if config.turns or c != "video_phash_turns"}

    def annotate_one(self, sample: SampleView) -> Row:
        c = self.config
        try:
            got = sample.video_frames(every_s=c.every_s, max_frames=c.max_frames, size=c.size, timeout_s=c.timeout_s, memory_mb=c.memory_mb)
        except DecodeError as exc:
            return {"error": str(exc)}
        gray = np.stack([np.asarray(Image.fromarray(f).convert("L")) for f in got.frames])
        rows, cols = static_borders(gray) if c.crop_borders else (slice(None), slice(None))
        thumbs = np.stack([perceptual.thumbnail(Image.fromarray(np.ascontiguousarray(g[rows, cols])), perceptual.PHASH_SIZE) for g in gray])
        patterned = thumbs.reshape(len(thumbs), -1).std(axis=1) >= _FLAT_STD
        kept = thumbs[patterned]
        row: Row = {"video_phash": [int(h) for h in perceptual.phash_pixels(kept)], "video_phash_frames": len(thumbs)}
        if c.turns:
            turned = np.concatenate([np.rot90(kept, k, axes=(1, 2)) for k in (1, 2, 3)])
            row["video_phash_turns"] = [int(h) for h in perceptual.phash_pixels(turned)]
        return row
