"""``sha256``: hex digest of the image member's bytes, for exact deduplication."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

from ...decode import DecodeError
from ..sampleview import SampleView
from .base import Annotator, Row


@dataclass(frozen=True)
class Sha256Config:
    modality: str = "image"
    """Which member to hash (a modality name from the recipe)."""


class Sha256(Annotator):
    name = "sha256"
    needs_pixels = False
    Config = Sha256Config
    columns = {"sha256": pa.string()}

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            data = sample.require(self.config.modality)
        except DecodeError as exc:
            return {"error": str(exc)}
        return {"sha256": hashlib.sha256(data).hexdigest()}
