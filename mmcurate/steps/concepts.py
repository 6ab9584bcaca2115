"""MetaCLIP's substring matching of captions against a list of entries (concepts).

A caption is lower-cased, padded with a space on each side, ``, . ; : ? !`` and backticks get
a space on each side, and tabs, newlines and carriage returns become spaces (MetaCLIP's
``spacing``); entry ``e`` (lower-cased, stripped) matches when ``" e "`` is a substring of the
result. Overlapping and nested entries all match (``new york`` and ``york`` in "New York.").
An Aho-Corasick automaton (``pyahocorasick``) finds every entry in one pass over the caption,
so the cost does not grow with the number of entries.

Entry lists: a UTF-8 text file, one entry per line (blank lines skipped, repeats kept once),
or a built-in list named ``builtin:NAME`` (:data:`BUILTIN`).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

__all__ = ["BUILTIN", "ConceptMatcher", "builtin_entries", "entries_digest", "normalize_entries", "spacing"]

_WRAPPED = (",", ".", ";", ":", "?", "!", "`")
_SPACED = ("\t", "\n", "\r")


def _imagenet() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


BUILTIN: dict[str, Callable[[], list[str]]] = {"imagenet": _imagenet}
"""``builtin:imagenet``: the 1,000 ImageNet class names open_clip ships for zero-shot
classification (OpenAI's cleaned names; open_clip ships no synonyms)."""


def builtin_entries(name: str) -> list[str]:
    """The entries of ``builtin:NAME``; ``KeyError`` lists the names."""
    if name not in BUILTIN:
        raise KeyError(f"no built-in entry list {name!r}; built in: {', '.join('builtin:' + n for n in BUILTIN)}")
    return BUILTIN[name]()


def spacing(text: str) -> str:
    """The caption as it is matched: lower-cased, padded, punctuation wrapped in spaces."""
    spaced = f" {text.lower()} "
    for mark in _WRAPPED:
        spaced = spaced.replace(mark, f" {mark} ")
    for char in _SPACED:
        spaced = spaced.replace(char, " ")
    return spaced


def normalize_entries(lines: Iterable[str]) -> list[str]:
    """Entries as they are matched: stripped, lower-cased, blanks dropped, each once (first place kept)."""
    seen: dict[str, None] = {}
    for line in lines:
        entry = line.strip().lower()
        if entry:
            seen.setdefault(entry, None)
    return list(seen)


def entries_digest(entries: list[str]) -> str:
    """SHA-256 of the normalized entries, one per line (what the matches depend on)."""
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()


class ConceptMatcher:
    """An Aho-Corasick index of ``entries`` (normalized, see :func:`normalize_entries`)."""

    def __init__(self, entries: list[str]):
        try:
            import ahocorasick
        except ImportError:
            raise ImportError("the concepts annotator needs pyahocorasick: pip install pyahocorasick") from None
        self.entries = entries
        self.automaton = ahocorasick.Automaton()
        for index, entry in enumerate(entries):
            self.automaton.add_word(f" {entry} ", index)
        if entries:
            self.automaton.make_automaton()

    def match(self, caption: str) -> list[int]:
        """Indexes (in list order) of the entries ``caption`` matches."""
        if not self.entries:
            return []
        return sorted({index for _, index in self.automaton.iter(spacing(caption))})
