"""``concepts``: which entries of a list (concepts, e.g. MetaCLIP's metadata) the caption names.

``entries: path/to/entries.txt`` (one entry per line) or ``entries: builtin:imagenet``; matching
is MetaCLIP's (:mod:`mmcurate.steps.concepts`). The list's content (normalized entries) is part
of the step's fingerprint: editing the file recomputes the column, and a file changed while
a run uses it fails the run's tasks instead of mixing two lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from ...decode import DecodeError
from ..concepts import ConceptMatcher, builtin_entries, entries_digest, normalize_entries
from ..sampleview import SampleView
from .base import Annotator, AnnotatorUnavailable, Row

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class ConceptsConfig:
    entries: str = "builtin:imagenet"
    """A text file with one entry per line, or ``builtin:NAME``."""


def _load(spec: str) -> list[str]:
    """The normalized entries ``spec`` names; ``AnnotatorUnavailable`` says what is wrong."""
    if spec.startswith(BUILTIN_PREFIX):
        try:
            return normalize_entries(builtin_entries(spec[len(BUILTIN_PREFIX) :]))
        except KeyError as exc:
            raise AnnotatorUnavailable(f"STEP.entries: {exc.args[0]}") from None
    try:
        text = Path(spec).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise AnnotatorUnavailable(f"STEP.entries: cannot read {spec}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise AnnotatorUnavailable(f"STEP.entries: {spec} is not UTF-8 text ({exc})") from None
    return normalize_entries(text.splitlines())


class Concepts(Annotator):
    """Columns ``concepts`` (the matched entries, in list order) and ``concept_count``."""

    name = "concepts"
    needs_pixels = False
    Config = ConceptsConfig
    columns = {"concepts": pa.list_(pa.string()), "concept_count": pa.int32()}

    @classmethod
    def prepare(cls, config: ConceptsConfig) -> Mapping[str, Any]:
        entries = _load(config.entries)
        source = config.entries if config.entries.startswith(BUILTIN_PREFIX) else str(Path(config.entries).expanduser().resolve())
        return {"source": source, "entries": len(entries), "sha256": entries_digest(entries)}

    def setup(self) -> None:
        source = self.resolved.get("source", self.config.entries)
        entries = _load(source)
        if self.resolved and entries_digest(entries) != self.resolved["sha256"]:
            raise RuntimeError(f"{source}: the entry list changed while the run used it; run again")
        self.matcher = ConceptMatcher(entries)

    def annotate_one(self, sample: SampleView) -> Row:
        try:
            raw = sample.require("text")
        except DecodeError as exc:
            return {"error": str(exc)}
        found = self.matcher.match(raw.decode("utf-8", errors="replace"))
        return {"concepts": [self.matcher.entries[i] for i in found], "concept_count": len(found)}
