"""``phash`` and ``dhash``: 64-bit perceptual hashes of the decoded image, for near-duplicate search.

Values equal ``int(str(imagehash.phash(img)), 16)`` (respectively ``dhash``) on the image
as decoded by ``image_info`` (EXIF orientation applied), stored as uint64. Compare two
hashes with :func:`mmcurate.perceptual.hamming`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import numpy as np
import pyarrow as pa

from .. import perceptual
from ..decode import DecodeError
from ..sampleview import SampleView
from .base import Annotator, Row

__all__ = ["DHash", "HashConfig", "PHash"]


@dataclass(frozen=True)
class HashConfig:
    mirror: bool = False
    """Also hash the horizontally mirrored image, so mirrored copies match."""


class _PerceptualHash(Annotator):
    """Shared by :class:`PHash` and :class:`DHash`: column ``<name>``, and ``<name>_mirror`` with ``mirror: true``."""

    Config = HashConfig
    size: ClassVar[tuple[int, int]]
    """(width, height) of the grayscale thumbnail the hash is computed from."""
    hash_pixels: ClassVar[Callable[[np.ndarray], np.ndarray]]
    """(N, height, width) uint8 thumbnails -> (N,) uint64 hashes."""

    @classmethod
    def columns_for(cls, config: HashConfig) -> dict[str, pa.DataType]:
        return {c: t for c, t in cls.columns.items() if config.mirror or not c.endswith("_mirror")}

    def annotate(self, batch: Sequence[SampleView]) -> list[Row]:
        rows: list[Row] = [{} for _ in batch]
        small: list[np.ndarray] = []
        where: list[int] = []
        for i, sample in enumerate(batch):
            try:
                img, _ = sample.image()  # the decode image_info already did, shared per sample
                small.append(perceptual.thumbnail(img, self.size))
            except DecodeError as exc:
                rows[i] = {"error": str(exc)}
                continue
            except (OSError, ValueError) as exc:  # a mode Pillow cannot turn to grayscale
                rows[i] = {"error": f"decode_error: cannot hash {type(exc).__name__}: {exc}"}
                continue
            where.append(i)
        if not small:
            return rows
        thumbs = np.stack(small)
        hashes = type(self).hash_pixels(thumbs)
        mirrored = type(self).hash_pixels(thumbs[:, :, ::-1]) if self.config.mirror else None
        for j, i in enumerate(where):
            rows[i] = {self.name: int(hashes[j])}
            if mirrored is not None:
                rows[i][f"{self.name}_mirror"] = int(mirrored[j])
        return rows


class PHash(_PerceptualHash):
    """DCT perceptual hash (``imagehash.phash``): robust to rescaling, recompression, small edits."""

    name = "phash"
    columns = {"phash": pa.uint64(), "phash_mirror": pa.uint64()}
    size = perceptual.PHASH_SIZE
    hash_pixels = staticmethod(perceptual.phash_pixels)


class DHash(_PerceptualHash):
    """Difference hash (``imagehash.dhash``): horizontal gradients of a 9x8 thumbnail."""

    name = "dhash"
    columns = {"dhash": pa.uint64(), "dhash_mirror": pa.uint64()}
    size = perceptual.DHASH_SIZE
    hash_pixels = staticmethod(perceptual.dhash_pixels)
