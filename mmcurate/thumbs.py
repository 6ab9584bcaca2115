"""Thumbnails of samples as self-contained HTML (media inlined as base64), dispatched on modality.

:func:`sample_html` shows a sample's media through the first modality with a registered
thumbnailer, then its caption. Built in: ``image`` (a small JPEG) and ``audio`` (an inline
player for small files). Other modalities plug in without touching this module::

    @mmcurate.thumbs.register("video")
    def frame_strip(view: SampleView, size: int) -> str:   # e.g. 4 decoded frames side by side
        ...

A thumbnailer returns an HTML fragment and raises :class:`~mmcurate.decode.DecodeError`
for media it cannot show; the reason is shown instead.
"""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Callable

from .decode import DecodeError
from .sampleview import SampleView

__all__ = ["Thumbnailer", "caption", "media_html", "register", "sample_html"]

Thumbnailer = Callable[[SampleView, int], str]
_THUMBNAILERS: dict[str, Thumbnailer] = {}
MAX_INLINE_AUDIO = 512 * 1024


def register(modality: str) -> Callable[[Thumbnailer], Thumbnailer]:
    """Decorator: use the function for samples carrying ``modality`` (replaces an earlier one)."""

    def add(fn: Thumbnailer) -> Thumbnailer:
        _THUMBNAILERS[modality] = fn
        return fn

    return add


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@register("image")
def image_thumbnail(view: SampleView, size: int) -> str:
    img, _ = view.image()
    small = img.copy()
    small.thumbnail((size, size))  # shrink first: converting a large image would cost more
    small = small.convert("RGB")
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return f'<img src="{data_uri("image/jpeg", buf.getvalue())}" width="{small.width}" height="{small.height}" alt="{escape(view.key)}">'


@register("audio")
def audio_player(view: SampleView, size: int) -> str:
    ext, data = view.member("audio") or ("", b"")
    if len(data) > MAX_INLINE_AUDIO:
        return placeholder(f"{ext} audio, {len(data) // 1024} KiB (not inlined)", size)
    mime = {"mp3": "audio/mpeg", "m4a": "audio/mp4", "opus": "audio/ogg"}.get(ext, f"audio/{ext}")
    return f'<audio controls preload="none" style="width:{size}px" src="{data_uri(mime, data)}"></audio>'


def placeholder(text: str, size: int) -> str:
    return f'<div class="ph" style="width:{size}px;height:{size * 3 // 4}px">{escape(text)}</div>'


def media_html(view: SampleView, size: int = 128) -> str:
    """The sample's media as HTML: the first modality (recipe order) with a thumbnailer and a member."""
    for modality in view.modalities:
        fn = _THUMBNAILERS.get(modality)
        if fn is None or view.member(modality) is None:
            continue
        try:
            return fn(view, size)
        except DecodeError as exc:
            return placeholder(str(exc), size)
    text = view.member("text")
    others = [m.ext for m in view.sample.members if text is None or m.ext != text[0]]
    if text is not None and not others:
        return ""  # a text-only sample: its caption says it all
    members = ", ".join(others) or "no members"
    return placeholder(f"nothing to show ({members})", size)


def caption(view: SampleView, limit: int = 140) -> str | None:
    """The text member, decoded leniently and cut to ``limit`` characters; None without one."""
    found = view.member("text")
    if found is None:
        return None
    text = found[1].decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sample_html(view: SampleView, size: int = 128, note: str = "") -> str:
    """A figure: media, key, caption and ``note`` (already-escaped HTML, e.g. annotation values)."""
    text = caption(view)
    return (
        f'<figure class="thumb">{media_html(view, size)}<figcaption><b>{escape(view.key)}</b>'
        + (f"<br>{escape(text)}" if text else "")
        + (f"<br>{note}" if note else "")
        + "</figcaption></figure>"
    )
