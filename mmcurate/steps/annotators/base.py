"""What an annotator is: a typed, frozen config, declared output columns, and a batch function.

Annotators compute columns and never decide. A sample they cannot handle gets an error
string instead of an exception (``decode_error: ...``); the engine drops it with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import pyarrow as pa

from ..sampleview import SampleView

__all__ = ["Annotator", "AnnotatorUnavailable", "NoConfig", "Row"]

Row = dict[str, Any]
"""One sample's output: the declared columns, plus ``"error"`` (str) when it failed."""


class AnnotatorUnavailable(RuntimeError):
    """What an annotator needs (weights, a device) is missing; the message says how to provide it.
    ``STEP.`` in the message of :meth:`Annotator.prepare` is replaced by the step's id (as in
    ``--set STEP.checkpoint=...``)."""


@dataclass(frozen=True)
class NoConfig:
    """For annotators without settings."""


class Annotator:
    """Base class. Subclasses set ``name``, ``columns`` and ``Config`` and implement ``annotate``.

    ``__init__`` stays cheap and picklable; ``setup()`` runs once per worker process before
    the first batch (load models there). Bump ``version`` when the output changes, so
    stored annotations are recomputed. The classmethods below have defaults that fit a
    cheap CPU annotator with fixed columns; model annotators override them.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    columns: ClassVar[dict[str, pa.DataType]]
    Config: ClassVar[type] = NoConfig
    needs_pixels: ClassVar[bool] = True
    """Whether ``annotate`` reads decoded pixels (``sample.image()``). Annotators that need at
    most ``sample.image_meta()`` set False: a group of only such annotators verifies JPEGs
    with a reduced-scale decode, about twice as fast."""

    @classmethod
    def columns_for(cls, config: Any) -> dict[str, pa.DataType]:
        """The columns this annotator writes with ``config`` (default: the fixed ``columns``)."""
        return dict(cls.columns)

    @classmethod
    def needs_pixels_for(cls, config: Any) -> bool:
        """Whether ``annotate`` reads decoded pixels with ``config`` (default: ``needs_pixels``)."""
        return cls.needs_pixels

    @classmethod
    def prepare(cls, config: Any) -> Mapping[str, Any]:
        """Run once in the driver before any work: check, or fetch, what ``config`` needs
        (model weights...) and raise :class:`AnnotatorUnavailable` saying how to provide it.
        Returns JSON-able identity of the resolved resources, added to the step's fingerprint
        (so replacing a checkpoint file recomputes its rows) and handed to every instance as
        ``resolved`` (so workers use exactly what was resolved). Default: nothing to check."""
        return {}

    @classmethod
    def resources_for(cls, config: Any) -> dict[str, float]:
        """Dask worker resources a task running this annotator asks for, e.g. ``{"GPU": 1}``;
        requested only when the cluster has workers offering them. Default: none."""
        return {}

    @classmethod
    def batch_size_for(cls, config: Any) -> int | None:
        """Samples per ``annotate()`` call this annotator wants (None: the engine's default)."""
        return None

    def __init__(self, config: Any = None, resolved: Mapping[str, Any] | None = None):
        self.config = config if config is not None else self.Config()
        self.resolved: Mapping[str, Any] = resolved or {}
        """What :meth:`prepare` returned in the driver for ``config``."""

    def setup(self) -> None:
        """Load heavy state (models) once per worker. Default: nothing."""

    def annotate(self, batch: Sequence[SampleView]) -> list[Row]:
        """Return one row per sample, in order."""
        return [self.annotate_one(sample) for sample in batch]

    def annotate_one(self, sample: SampleView) -> Row:
        raise NotImplementedError(f"{type(self).__name__} implements neither annotate nor annotate_one")
