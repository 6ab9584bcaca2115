"""What a dedup step reports, and the drop reason per method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLUSTER_FILE", "DedupReport", "REASONS", "REFERENCE_REASON"]

REASONS = {
    "exact": "duplicate_of",
    "phash": "near_duplicate_of",
    "semantic": "semantic_duplicate_of",
    "video_phash": "video_near_duplicate_of",
}
REFERENCE_REASON = "matches_reference"
"""The drop reason (``matches_reference:KEY``) of a sample whose cluster holds a reference item
(``--against``, ``against:``): reference items always stay, whatever the method."""
CLUSTER_FILE = "dataset.parquet"


@dataclass
class DedupReport:
    step: str
    method: str
    removed: int
    clusters: int
    """Clusters with more than one member."""
    largest: list[tuple[int, str, list[str]]] = field(default_factory=list)
    """(size, kept key, a few dropped keys) of the largest clusters."""
    stats: dict[str, Any] = field(default_factory=dict)
