"""``sha256`` and ``md5``: hex digest of a member's bytes (the image by default), for exact
deduplication and for blocklists of known files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from ...decode import DecodeError
from ..sampleview import SampleView
from .base import Annotator, Row

__all__ = ["DigestConfig", "Md5", "Sha256"]


@dataclass(frozen=True)
class DigestConfig:
    modality: str = "image"
    """Which member to hash (a modality name from the recipe: image, video, audio...)."""



class _MemberDigest(Annotator):
    """Column ``<name>``: ``hashlib.<name>`` of the member's bytes, in hex."""

    needs_pixels = False
    Config = DigestConfig
    digest_size: ClassVar[int]
    """Bytes of the digest (its hex string has twice as many characters)."""

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            data = sample.require(self.config.modality)
        except DecodeError as exc:
            return {"error": str(exc)}
        return {self.name: hashlib.new(self.name, data).hexdigest()}


class Sha256(_MemberDigest):
    name = "sha256"
    columns = {"sha256": pa.string()}
    digest_size = 32


class Md5(_MemberDigest):
    name = "md5"
    columns = {"md5": pa.string()}
    digest_size = 16
