"""``caption_info``: length of the caption in characters and words, and whether it is valid UTF-8."""

from __future__ import annotations

import pyarrow as pa

from ...decode import DecodeError
from ..sampleview import SampleView
from .base import Annotator, Row


class CaptionInfo(Annotator):
    """Counts are taken on the stripped caption; invalid UTF-8 is decoded with replacement."""

    name = "caption_info"
    needs_pixels = False
    columns = {
        "caption_chars": pa.int32(),
        "caption_words": pa.int32(),
        "caption_valid_utf8": pa.bool_(),
    }

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            raw = sample.require("text")
        except DecodeError as exc:
            return {"error": str(exc)}
        try:
            text, valid = raw.decode("utf-8"), True
        except UnicodeDecodeError:
            text, valid = raw.decode("utf-8", errors="replace"), False
        text = text.strip()
        return {"caption_chars": len(text), "caption_words": len(text.split()), "caption_valid_utf8": valid}
