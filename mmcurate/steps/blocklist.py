"""Blocklists of known-bad hashes: a per-sample step that drops every sample whose hash is listed.

A list is a text file of hex digests, one per line; ``#`` starts a comment, blank lines are
skipped. ``md5`` and ``sha256`` match exactly (a set lookup). ``pdq`` and ``phash`` match when
the Hamming distance to some listed hash is at most ``max_distance``: an exact search over the
whole list with a numpy popcount, about 3 ms per sample for 100,000 PDQ hashes, so lists up to
some 100,000 entries run at annotation speed (a bigger list wants an index such as a
multi-index hash table; none is built here). A PDQ hash of quality below
:data:`~mmcurate.steps.pdq.MIN_QUALITY` never matches, as in ThreatExchange's tooling.

Each worker process builds a list's index once (keyed by the file's SHA-256, which the recipe
recorded when it was loaded); a list that changed since then fails the task rather than
deciding with other contents than the run records.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .perceptual import hamming
from .pdq import MIN_QUALITY

__all__ = ["METHODS", "Method", "BlocklistIndex", "index_for", "read_list"]


@dataclass(frozen=True)
class Method:
    """How a blocklist of one hash kind is matched."""

    column: str
    """The annotation column holding the sample's hash."""
    annotator: str
    """The annotator that computes ``column`` (named in error messages)."""
    hex_digits: int
    near: bool
    """Whether ``max_distance`` applies (perceptual hashes)."""
    default_distance: int = 0


METHODS: dict[str, Method] = {
    "md5": Method("md5", "md5", 32, near=False),
    "sha256": Method("sha256", "sha256", 64, near=False),
    "pdq": Method("pdq", "pdq", 64, near=True, default_distance=31),
    "phash": Method("phash", "phash", 16, near=True),
}
"""``pdq`` defaults to distance 31 (ThreatExchange's matching threshold), ``phash`` to 0."""


def read_list(path: str | os.PathLike[str], method: str) -> tuple[list[str], str]:
    """The lower-case hex digests of the list at ``path`` and the file's SHA-256; ``ValueError``
    names the file and line of a digest that is not ``METHODS[method].hex_digits`` hex digits."""
    data = open(path, "rb").read()
    digits = METHODS[method].hex_digits
    found = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip().lower()
        if not text:
            continue
        if len(text) != digits or any(c not in "0123456789abcdef" for c in text):
            raise ValueError(f"{path}:{number}: {text[:80]!r} is not a {method} digest ({digits} hex digits)")
        found.append(text)
    return found, hashlib.sha256(data).hexdigest()


class BlocklistIndex:
    """The digests of one list, ready to test samples' hashes against."""

    def __init__(self, method: str, digests: list[str], max_distance: int):
        self.method = METHODS[method]
        self.max_distance = max_distance
        self.exact = set(digests)
        words = self.method.hex_digits // 16
        self.packed = np.array([[int(d[i * 16 : (i + 1) * 16], 16) for i in range(words)] for d in digests], dtype=np.uint64).reshape(-1, words)

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether the sample with annotation ``row`` is on the list."""
        value = row.get(self.method.column)
        if value is None:
            return False
        if self.method.column == "pdq" and (row.get("pdq_quality") or 0) < MIN_QUALITY:
            return False
        text = value if isinstance(value, str) else f"{value:016x}"
        if text in self.exact:
            return True
        if not self.method.near or self.max_distance == 0 or not len(self.packed):
            return False
        words = self.packed.shape[1]
        query = np.array([int(text[i * 16 : (i + 1) * 16], 16) for i in range(words)], dtype=np.uint64)
        return bool((hamming(self.packed, query).sum(axis=1) <= self.max_distance).any())


_indexes: dict[tuple[str, str, str, int], BlocklistIndex] = {}  # per worker process


def index_for(path: str, method: str, max_distance: int, sha256: str) -> BlocklistIndex:
    """The index of the list at ``path`` as it was when the recipe was loaded (its ``sha256``),
    built once per process; ``RuntimeError`` if the file changed since."""
    key = (path, method, sha256, max_distance)
    if key not in _indexes:
        digests, now = read_list(path, method)
        if now != sha256:
            raise RuntimeError(f"{path}: the blocklist changed while the run used it (sha256 {now[:12]}…, the recipe loaded {sha256[:12]}…); run again")
        _indexes[key] = BlocklistIndex(method, digests, max_distance)
    return _indexes[key]
