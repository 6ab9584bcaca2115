"""``pdq``: Meta's PDQ hash (256 bits, 64 hex digits) and quality (0-100) of the image.

Computed by :mod:`mmcurate.steps.pdq` (numpy, bit-exact with ThreatExchange's reference) from
the fully decoded, upright image converted to RGB, at full resolution as ThreatExchange's
Python tooling hashes files. Hashes of quality below :data:`~mmcurate.steps.pdq.MIN_QUALITY`
(flat or nearly flat pictures) are stored but never match a ``blocklist: pdq`` entry.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ...decode import DecodeError
from ..pdq import pdq_hash, pdq_luma
from ..sampleview import SampleView
from .base import Annotator, Row


class Pdq(Annotator):
    """Cost grows with the pixel count (two sequential box-filter passes, as in the reference):
    about 60 ms for a 1-megapixel photo, about half a second for 6 megapixels, on one core."""

    name = "pdq"
    columns = {"pdq": pa.string(), "pdq_quality": pa.int32()}

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            img, _ = sample.image()
            rgb = np.asarray(img.convert("RGB"))
        except DecodeError as exc:
            return {"error": str(exc)}
        except (OSError, ValueError) as exc:  # a mode Pillow cannot turn to RGB
            return {"error": f"decode_error: cannot hash {type(exc).__name__}: {exc}"}
        value, quality = pdq_hash(pdq_luma(rgb))
        return {"pdq": value, "pdq_quality": quality}
