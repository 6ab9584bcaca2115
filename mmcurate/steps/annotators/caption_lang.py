"""``caption_lang``: the caption's language (ISO 639-1 code) and the identifier's confidence.

Uses ``py3langid`` (langid.py's maintained fork: a naive Bayes model over byte n-grams, 97
languages, the model inside the wheel, nothing downloaded), with normalized probabilities,
so ``caption_lang_confidence`` is in [0, 1]. A caption with no letters (empty, digits or
punctuation only) gets ``und`` (undetermined) and confidence 0. DataComp used fastText's
lid.176, whose model is downloaded at run time; langid's top language agrees on ordinary
captions, its confidences are not comparable.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ...decode import DecodeError
from ..sampleview import SampleView
from .base import Annotator, AnnotatorUnavailable, Row

UNDETERMINED = "und"


def _identifier() -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise AnnotatorUnavailable("caption_lang needs py3langid (its model ships in the wheel): pip install py3langid") from None
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class CaptionLang(Annotator):
    """About 30,000 captions/s on one core; the model loads once per worker (about a second)."""

    name = "caption_lang"
    version = "1"
    needs_pixels = False
    columns = {"caption_lang": pa.string(), "caption_lang_confidence": pa.float32()}

    @classmethod
    def prepare(cls, config: Any) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:  # the model's version is part of the fingerprint: a new model recomputes the rows
            return {"py3langid": version("py3langid")}
        except PackageNotFoundError:
            raise AnnotatorUnavailable("caption_lang needs py3langid (its model ships in the wheel): pip install py3langid") from None

    def setup(self) -> None:
        self.identifier = _identifier()

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            raw = sample.require("text")
        except DecodeError as exc:
            return {"error": str(exc)}
        text = raw.decode("utf-8", errors="replace").strip()
        if not any(c.isalpha() for c in text):
            return {"caption_lang": UNDETERMINED, "caption_lang_confidence": 0.0}
        lang, confidence = self.identifier.classify(text)
        return {"caption_lang": lang, "caption_lang_confidence": float(confidence)}
