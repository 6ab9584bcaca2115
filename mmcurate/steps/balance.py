"""``balance``: MetaCLIP's balancing of a pool over the entries (concepts) its captions match.

An entry matched by ``c_e`` of the samples alive at the step keeps each of them with
probability ``p_e = 1`` if ``c_e < t`` else ``t / c_e`` (``t``: ``max_per_entry``), so a head
entry ends near ``t`` samples and a tail entry keeps all of its own. A sample matching several
entries stays with probability ``1 - prod(1 - p_e)`` (as if each match were drawn on its own,
MetaCLIP's rule); the draw is a hash of ``(seed, key)``, so a rerun decides the same. Samples
matching no entry are dropped (``unmatched: drop``, MetaCLIP) or kept (``keep``).

The counts are summed from per-shard counts; the decisions are per shard (no sample moves).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "BalanceConfig", "BalanceReport", "NO_CONCEPT", "REASON", "balance_reasons", "entry_counts", "entry_probabilities",
    "format_balance", "keep_probability", "uniform",
]

REASON = "balanced_out"
NO_CONCEPT = "no_concept"
UNMATCHED = ("drop", "keep")


@dataclass(frozen=True)
class BalanceConfig:
    """``max_per_entry`` (t), what happens to samples matching no entry, the draw's seed."""

    max_per_entry: int = 20_000
    unmatched: str = "drop"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_per_entry < 1:
            raise ValueError(f"field 'max_per_entry': expected a positive integer, got {self.max_per_entry!r}")
        if self.unmatched not in UNMATCHED:
            raise ValueError(f"field 'unmatched': expected one of {', '.join(UNMATCHED)}, got {self.unmatched!r}")


@dataclass
class BalanceReport:
    step: str
    column: str
    max_per_entry: int
    samples_in: int
    kept: int
    entries: int
    """Distinct entries matched by some sample."""
    capped: int
    """Entries matched by ``max_per_entry`` samples or more (thinned)."""
    head: list[tuple[str, int]] = field(default_factory=list)
    """The most matched entries and their counts before the step."""
    kind: str = "balance"


def _matched(value: Sequence[str] | None) -> list[str]:
    """A sample's matched entries, each once (a missing value matches none)."""
    return list(dict.fromkeys(value)) if value else []


def entry_counts(values: Iterable[Sequence[str] | None]) -> Counter[str]:
    """``c_e``: how many samples match each entry."""
    counts: Counter[str] = Counter()
    for value in values:
        counts.update(_matched(value))
    return counts


def entry_probabilities(counts: Mapping[str, int], max_per_entry: int) -> dict[str, float]:
    """``p_e``: 1 below ``t`` matches, else ``t / c_e``."""
    return {e: 1.0 if c < max_per_entry else max_per_entry / c for e, c in counts.items()}


def keep_probability(entries: Iterable[str], probabilities: Mapping[str, float]) -> float:
    """``1 - prod(1 - p_e)`` over a sample's matched entries."""
    return 1.0 - math.prod(1.0 - probabilities[e] for e in entries)


def uniform(seed: int, keys: Sequence[str]) -> np.ndarray:
    """One number in [0, 1) per key, from a hash of ``(seed, key)``: the same on every run and worker."""
    out = np.empty(len(keys))
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(f"{seed}\0{key}".encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def balance_reasons(values: Sequence[Sequence[str] | None], keys: Sequence[str], counts: Mapping[str, int],
                    config: BalanceConfig) -> list[str | None]:
    """Per sample its drop reason (``balanced_out:<its most matched entry>``, ``no_concept``) or
    None to keep it; ``counts`` are the whole dataset's :func:`entry_counts`."""
    probabilities = entry_probabilities(counts, config.max_per_entry)
    draws = uniform(config.seed, keys)
    reasons: list[str | None] = []
    for value, draw in zip(values, draws):
        entries = _matched(value)
        if not entries:
            reasons.append(NO_CONCEPT if config.unmatched == "drop" else None)
        elif draw < keep_probability(entries, probabilities):
            reasons.append(None)
        else:  # the most frequent entry, the first in the sample's list among equals
            reasons.append(f"{REASON}:{max(entries, key=lambda e: counts[e])}")
    return reasons


def format_balance(report: Mapping[str, Any]) -> str:
    """One line on one balance step (a :class:`BalanceReport` as a dict)."""
    head = ", ".join(f"{e} {c}" for e, c in report["head"])
    return (
        f"{report['step']}: balanced {report['column']} at {report['max_per_entry']} per entry: kept {report['kept']} of "
        f"{report['samples_in']}; {report['capped']} of {report['entries']} matched entries thinned"
        + (f" (most matched: {head})" if head else "")
    )
