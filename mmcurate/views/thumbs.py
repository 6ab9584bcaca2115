"""Thumbnails of samples as self-contained HTML (media inlined as base64), dispatched on modality.

:func:`sample_html` shows a sample's media through the first modality with a registered
thumbnailer, then its caption. Built in: ``image`` (a small JPEG), ``video`` (a strip of
frames sampled across the clip) and ``audio`` (the waveform, and a player for small files). Other
modalities plug in without touching this module::

    @mmcurate.views.thumbs.register("pointcloud")
    def top_view(view: SampleView, size: int) -> str:
        ...

A thumbnailer returns an HTML fragment and raises :class:`~mmcurate.decode.DecodeError`
for media it cannot show; the reason is shown instead. Any other error fails that one
thumbnail alone (a placeholder names it), never the page around it.
"""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Callable

import numpy as np
from PIL import Image

from ..decode import DecodeError
from ..steps.sampleview import SampleView

__all__ = ["Thumbnailer", "caption", "media_html", "register", "sample_html"]

Thumbnailer = Callable[[SampleView, int], str]
_THUMBNAILERS: dict[str, Thumbnailer] = {}
MAX_INLINE_AUDIO = 512 * 1024
STRIP_FRAMES = 4


def register(modality: str) -> Callable[[Thumbnailer], Thumbnailer]:
    """Decorator: use the function for samples carrying ``modality`` (replaces an earlier one)."""

    def add(fn: Thumbnailer) -> Thumbnailer:
        _THUMBNAILERS[modality] = fn
        return fn

    return add


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit single-channel images (``I;16``, ``I``, ``F``: scans, depth maps) as ``L``:
    16-bit values scaled by 1/257, others stretched over their own range. Other modes as they are."""
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        scaled = values / 257.0
    else:
        low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))  # 2-D uint8: mode L


def _jpeg_img(img: Image.Image, box: int, alt: str) -> str:
    small = _eight_bit(img)  # Pillow cannot shrink these modes
    small = small.copy() if small is img else small
    small.thumbnail((box, box))  # shrink first: converting a large image would cost more
    small = small.convert("RGB")
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return f'<img src="{data_uri("image/jpeg", buf.getvalue())}" width="{small.width}" height="{small.height}" alt="{escape(alt)}">'


@register("image")
def image_thumbnail(view: SampleView, size: int) -> str:
    img, _ = view.image()
    return _jpeg_img(img, size, view.key)


@register("video")
def frame_strip(view: SampleView, size: int) -> str:
    """Four frames spread uniformly over the clip, side by side, each at most ``size // 2`` px."""
    frames = view.video_frames(n=STRIP_FRAMES, size=size // 2)
    cells = [_jpeg_img(img, size // 2, f"{view.key} at {t:.1f} s") for img, t in zip(frames.images(), frames.timestamps_s)]
    return f'<div class="strip">{"".join(cells)}</div>'


@register("audio")
def waveform(view: SampleView, size: int) -> str:
    """The decoded sound's envelope as inline SVG, with a player when the file is small."""
    sound = view.audio()
    ext, data = view.member("audio") or ("", b"")
    mono = np.abs(sound.waveform).max(axis=0) if sound.waveform.size else np.zeros(1, np.float32)
    columns = np.array_split(mono, min(size, len(mono)))
    peaks = np.array([c.max() for c in columns]) / max(float(mono.max()), 1e-9)
    half = size // 6
    points = " ".join(f"{x},{half - p * half:.1f}" for x, p in enumerate(peaks))
    points += " " + " ".join(f"{x},{half + p * half:.1f}" for x, p in reversed(list(enumerate(peaks))))
    html = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{2 * half}" style="background:#f4f4f4">'
        f'<polygon points="{points}" fill="#555"/><title>{sound.duration_s:.2f} s, {sound.channels} channel(s)</title></svg>'
    )
    if len(data) <= MAX_INLINE_AUDIO:
        mime = {"mp3": "audio/mpeg", "m4a": "audio/mp4", "opus": "audio/ogg"}.get(ext, f"audio/{ext}")
        html += f'<audio controls preload="none" style="width:{size}px" src="{data_uri(mime, data)}"></audio>'
    return html


def placeholder(text: str, size: int) -> str:
    """A grey box saying ``text`` (cut short: the full reason is printed under the thumbnail)."""
    short = text if len(text) <= 70 else text[:69] + "…"
    return f'<div class="ph" style="width:{size}px;height:{size * 3 // 4}px">{escape(short)}</div>'


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
        except Exception as exc:  # a thumbnailer's own failure: this thumbnail only, never the page
            return placeholder(f"no thumbnail: {type(exc).__name__}: {exc}", size)
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
