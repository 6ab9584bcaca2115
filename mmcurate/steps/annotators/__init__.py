"""Annotator registry: built-ins, ones registered in Python, and the ``mmcurate.annotators`` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

from .audio_info import AudioInfo
from .base import Annotator, AnnotatorUnavailable, NoConfig, Row
from .caption_info import CaptionInfo
from .caption_lang import CaptionLang
from .clip import ClipScore, ClipTags
from .concepts import Concepts
from .image_info import ImageInfo
from .pdq import Pdq
from .phash import DHash, PHash
from .sha256 import Md5, Sha256
from .video_info import VideoInfo
from .video_phash import VideoPHash

__all__ = ["Annotator", "AnnotatorUnavailable", "NoConfig", "Row", "get", "names", "origin", "register"]

_BUILT_IN = (ImageInfo, CaptionInfo, CaptionLang, Sha256, Md5, PHash, DHash, Pdq, VideoInfo, VideoPHash, AudioInfo, ClipScore, ClipTags, Concepts)
_REGISTRY: dict[str, type[Annotator]] = {cls.name: cls for cls in _BUILT_IN}
_ORIGINS: dict[str, str] = {}


def register(cls: type[Annotator]) -> type[Annotator]:
    """Add an annotator class under ``cls.name`` (usable as a decorator)."""
    _REGISTRY[cls.name] = cls
    _ORIGINS[cls.name] = f"registered in Python ({cls.__module__}.{cls.__qualname__})"
    return cls


def _load_entry_points() -> None:
    for ep in entry_points(group="mmcurate.annotators"):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = ep.load()
            dist = getattr(ep, "dist", None)
            _ORIGINS[ep.name] = f"entry point of {dist.name} {dist.version}" if dist else f"entry point {ep.value}"


def origin(name: str) -> str:
    """Where the annotator ``name`` comes from: built-in, registered in Python, or which package's entry point."""
    get(name)
    return _ORIGINS.get(name, "built-in")


def get(name: str) -> type[Annotator]:
    """The annotator class called ``name``; KeyError lists the known names."""
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown annotator {name!r}; known: {', '.join(names())} (register your own with "
            f"mmcurate.annotators.register, or install the package that provides it)"
        )
    return _REGISTRY[name]


def names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)
