"""Dedup step settings: one frozen config per method, and the keep policy."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExactConfig", "KeepPolicy", "METHODS", "NearConfig", "SemanticConfig", "VideoNearConfig"]


@dataclass(frozen=True)
class KeepPolicy:
    """Which member of a duplicate cluster stays: ``first`` (input order), ``highest COLUMN``,
    ``lowest COLUMN`` or ``largest resolution`` (width x height); ties go to the first."""

    kind: str  # "first" | "highest" | "lowest"
    column: str | None = None  # None for first; "resolution" means width * height

    @classmethod
    def parse(cls, text: str) -> "KeepPolicy":
        words = str(text).split()
        if words == ["first"]:
            return cls("first")
        if words == ["largest", "resolution"]:
            return cls("highest", "resolution")
        if len(words) == 2 and words[0] in ("highest", "lowest"):
            return cls(words[0], words[1])
        raise ValueError(f"keep must be 'first', 'highest COLUMN', 'lowest COLUMN' or 'largest resolution', not {text!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        if self.column is None:
            return ()
        return ("width", "height") if self.column == "resolution" else (self.column,)

    def __str__(self) -> str:
        if self.kind == "first":
            return "first"
        return "largest resolution" if self.column == "resolution" else f"{self.kind} {self.column}"


@dataclass(frozen=True)
class ExactConfig:
    column: str = "sha256"
    keep: str = "first"


@dataclass(frozen=True)
class NearConfig:
    column: str = "phash"
    max_distance: int = 4
    keep: str = "first"
    mirror: bool = False
    """Also match against ``<column>_mirror`` (from ``mirror: true`` on the hash annotator)."""
    variants: bool = False
    """Also match against the hashes in ``<column>_variants`` (from ``rotate: [...]`` on the
    hash annotator): a row matches when any of its hashes is near any hash of the other."""

    regions: bool = False
    """Also match against the hashes in ``<column>_regions`` (from ``regions: true`` on the
    hash annotator): centre crops and the picture less one edge, for crops and overlays."""

    @property
    def extra_columns(self) -> list[str]:
        """The columns of extra hashes per row this step searches besides ``column``."""
        named = (("mirror", self.mirror), ("variants", self.variants), ("regions", self.regions))
        return [f"{self.column}_{name}" for name, on in named if on]


@dataclass(frozen=True)
class SemanticConfig:
    column: str = "image_embedding"
    eps: float = 0.05
    """Drop a sample whose cosine similarity to a kept one in its k-means cluster is >= 1 - eps."""
    clusters: int = 0
    """k-means clusters; 0 picks about sqrt(n / 4)."""
    keep: str = "first"
    report_eps: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)
    """Also count how many samples each of these eps values would remove (for the report)."""
    fit_sample: int = 1_000_000
    """k-means is fitted on at most this many rows (every m-th row in input order); each
    cluster is then deduplicated by its own task."""


@dataclass(frozen=True)
class VideoNearConfig:
    """Videos as lists of frame hashes (the ``video_phash`` annotator): two videos are
    duplicates when at least ``min_shared`` of the hashed frames of one of them have a frame
    of the other within ``max_distance`` bits; duplicates of duplicates join one cluster."""

    column: str = "video_phash"
    max_distance: int = 8
    min_shared: float = 0.5
    keep: str = "first"
    max_hash_videos: int = 100
    """A frame hash held by more than this many videos (a shared intro, a black frame) is left
    out of the search (it cannot tell videos apart and costs m^2 pairs); reported."""
    turns: bool = True
    """Also match a video's frames against the other's frames turned by quarter turns
    (``<column>_turns``, from ``turns: true`` on the annotator, its default)."""

    @property
    def extra_columns(self) -> list[str]:
        """The columns of extra hashes per row this step searches besides ``column``."""
        return [f"{self.column}_turns"] if self.turns else []

    def __post_init__(self) -> None:
        if not 0 < self.min_shared <= 1:
            raise ValueError(f"min_shared must be in (0, 1], not {self.min_shared}")
        if self.max_hash_videos < 2:
            raise ValueError(f"max_hash_videos must be at least 2, not {self.max_hash_videos}")


METHODS: dict[str, type] = {
    "exact": ExactConfig,
    "phash": NearConfig,
    "semantic": SemanticConfig,
    "video_phash": VideoNearConfig,
}
