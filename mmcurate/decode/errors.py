"""DecodeError, and one_line(): decoder messages cut to short, stable drop reasons."""

from __future__ import annotations

import re


class DecodeError(ValueError):
    """A member that cannot be decoded; ``str(err)`` is the reason recorded for the sample."""


_NOISE = re.compile(
    r"\w+, \S+\.(?:cpp|cc|h):\d+,? "  # C++ class and source location
    r"|\[\d\d:\d\d:\d\d\] "  # decord's log timestamp
)


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception message on one short line, without the source paths, timestamps and
    object addresses decoders put in them (so equal failures give equal drop reasons)."""
    text = _NOISE.sub("", " ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
