"""``phash`` and ``dhash``: 64-bit perceptual hashes of the image, for near-duplicate search.

Two modes (part of the step's fingerprint):

* ``fast`` (default): hashes the small grayscale copy of a reduced-scale decode
  (:meth:`SampleView.image_small`, about a third of a full JPEG decode, and the same decode
  ``image_info`` verifies with), after trimming uniform borders (letterbox, pillarbox,
  padding; :func:`mmcurate.steps.perceptual.border_box`). ``rotate: [...]`` adds one hash per angle
  to the list column ``<name>_variants``, so turned copies match (``dedup: phash`` with
  ``variants: true`` searches them); ``regions: true`` adds hashes of centre crops and of the
  picture less one edge (:data:`mmcurate.steps.perceptual.REGIONS`) to ``<name>_regions``, so crops
  and copies with a caption or logo match (``dedup: phash`` with ``regions: true``). ``phash``
  computes these straight from DCT coefficients (:func:`mmcurate.steps.perceptual.robust_phashes`).
* ``exact``: ``int(str(imagehash.phash(img)), 16)`` (respectively ``dhash``) of the fully
  decoded image (EXIF orientation applied), bit for bit.

``mirror: true`` also hashes the mirrored picture into ``<name>_mirror``. Hashes are stored as
uint64; compare two with :func:`mmcurate.steps.perceptual.hamming`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa

from .. import perceptual
from ...decode import DecodeError
from ..sampleview import SampleView
from .base import Annotator, Row

__all__ = ["DHash", "HashConfig", "PHash"]

MODES = ("fast", "exact")


@dataclass(frozen=True)
class HashConfig:
    mode: str = "fast"
    """``fast``: from a reduced-scale decode, borders trimmed; ``exact``: imagehash's value."""
    mirror: bool = False
    """Also hash the horizontally mirrored image, so mirrored copies match."""
    rotate: tuple[float, ...] = ()
    """``fast`` only: also hash the image turned by these angles (degrees, counter-clockwise),
    stored in ``<name>_variants``; e.g. ``[-6, 6, 90, 180, 270]``."""
    regions: bool = False
    """``fast`` only: also hash the windows of :data:`mmcurate.steps.perceptual.REGIONS` into ``<name>_regions``."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if (self.rotate or self.regions) and self.mode != "fast":
            raise ValueError("rotate and regions need mode: fast (the exact mode hashes only what imagehash hashes)")


class _PerceptualHash(Annotator):
    """Shared by :class:`PHash` and :class:`DHash`: column ``<name>``, and ``<name>_mirror`` with
    ``mirror: true``, ``<name>_variants`` with ``rotate``, ``<name>_regions`` with ``regions: true``."""

    Config = HashConfig
    version = "4"
    size: ClassVar[tuple[int, int]]
    """(width, height) of the grayscale thumbnail the hash is computed from."""

    @classmethod
    def columns_for(cls, config: Any) -> dict[str, pa.DataType]:
        cols = {c: t for c, t in cls.columns.items() if config.mirror or not c.endswith("_mirror")}
        for suffix, on in (("variants", config.rotate), ("regions", config.regions)):
            if on:
                cols[f"{cls.name}_{suffix}"] = pa.list_(pa.uint64())
        return cols

    @classmethod
    def needs_pixels_for(cls, config: Any) -> bool:
        return config.mode == "exact"

    def _prepare(self, sample: SampleView) -> Any:
        """Per sample: the exact thumbnail of the decoded image, or the small grayscale copy
        that :meth:`_thumbnails` turns into thumbnails for the whole batch (fast)."""
        if self.config.mode == "exact":
            img, _ = sample.image()  # the decode image_info already did, shared per sample
            return perceptual.thumbnail(img, self.size)
        return sample.image_small()

    def _hashes(self, prepared: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, 1 + len(rotate) + regions) hashes (each picture, its turned variants, its regions),
        and (N,) of each picture mirrored with ``mirror: true``."""
        if self.config.mode == "exact":
            thumbs = np.stack(prepared)[:, None]
        else:
            windows = perceptual.REGIONS if self.config.regions else ()
            thumbs = perceptual.robust_thumbnails(prepared, self.size, rotations=self.config.rotate, windows=windows)
        hashes = self.hash_pixels(thumbs.reshape(-1, *thumbs.shape[2:])).reshape(thumbs.shape[:2])
        return hashes, (self.hash_pixels(thumbs[:, 0, :, ::-1]) if self.config.mirror else None)

    def annotate(self, batch: Sequence[SampleView]) -> list[Row]:
        rows: list[Row] = [{} for _ in batch]
        prepared: list[Any] = []
        where: list[int] = []
        for i, sample in enumerate(batch):
            try:
                prepared.append(self._prepare(sample))
            except DecodeError as exc:
                rows[i] = {"error": str(exc)}
                continue
            except (OSError, ValueError) as exc:  # a mode Pillow cannot turn to grayscale
                rows[i] = {"error": f"decode_error: cannot hash {type(exc).__name__}: {exc}"}
                continue
            where.append(i)
        if not prepared:
            return rows
        hashes, mirrored = self._hashes(prepared)
        for j, i in enumerate(where):
            rows[i] = {self.name: int(hashes[j, 0])}
            if mirrored is not None:
                rows[i][f"{self.name}_mirror"] = int(mirrored[j])
            turns = 1 + len(self.config.rotate)
            if self.config.rotate:
                rows[i][f"{self.name}_variants"] = [int(h) for h in hashes[j, 1:turns]]
            if self.config.regions:
                rows[i][f"{self.name}_regions"] = [int(h) for h in hashes[j, turns:]]
        return rows

    def hash_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, height, width) uint8 thumbnails -> (N,) uint64 hashes."""
        raise NotImplementedError


class PHash(_PerceptualHash):
    """DCT perceptual hash (``imagehash.phash``): robust to rescaling, recompression, small edits."""

    name = "phash"
    columns = {"phash": pa.uint64(), "phash_mirror": pa.uint64()}
    size = perceptual.PHASH_SIZE

    def hash_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return perceptual.phash_pixels(pixels, exact=self.config.mode == "exact")

    def _hashes(self, prepared: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        if self.config.mode == "exact":
            return super()._hashes(prepared)
        c = self.config
        return perceptual.robust_phashes(prepared, rotations=c.rotate, windows=perceptual.REGIONS if c.regions else (), mirror=c.mirror)


class DHash(_PerceptualHash):
    """Difference hash (``imagehash.dhash``): horizontal gradients of a 9x8 thumbnail."""

    name = "dhash"
    columns = {"dhash": pa.uint64(), "dhash_mirror": pa.uint64()}
    size = perceptual.DHASH_SIZE

    def hash_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return perceptual.dhash_pixels(pixels)
