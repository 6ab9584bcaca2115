"""DecodeError, one_line(): decoder messages cut to short, stable drop reasons, and check_duration()."""

from __future__ import annotations

import re


class DecodeError(ValueError):
    """A member that cannot be decoded; ``str(err)`` is the reason recorded for the sample."""


_NOISE = re.compile(
    r"\w+, \S+\.(?:cpp|cc|h):\d+,? "  # C++ class and source location
    r"|\[\d\d:\d\d:\d\d\] "  # decord's log timestamp
)


def check_duration(media: str, duration_s: float, max_duration_s: float | None, where: str = "") -> None:
    """:class:`DecodeError` ``<media> too long`` when ``duration_s`` exceeds ``max_duration_s`` (None: no limit)."""
    if max_duration_s is not None and duration_s > max_duration_s:
        raise DecodeError(f"decode_error: {media} too long ({duration_s:.0f} s > {max_duration_s:g} s{where})")


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception message on one short line, without the source paths, timestamps and
    object addresses decoders put in them (so equal failures give equal drop reasons)."""
    text = _NOISE.sub("", " ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
