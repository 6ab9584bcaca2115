"""A shared annotation cache: stored parts that many runs reuse, wherever their ``--out``.

An annotation part is content-addressed: its name, ``NAME-FP.parquet``, carries a fingerprint of
the annotator (name, version, config, resolved resources), the modalities, the annotate steps
before it and the input shard's identity (see :mod:`mmcurate.engine.plan`). So a part computed
by one run is valid in any run that names it, with any filter threshold. Layout::

    CACHE/CACHEDIR.TAG                  marks the folder as a cache (backup tools skip it)
    CACHE/KIND/NAME-FP.parquet          KIND: the annotator's name, or ``read`` (shard manifests)

A run keeps its own store (``OUT/annotations/``) complete: a part found in the cache is hard
linked into it (copied across filesystems), and a part the run wrote is linked into the cache.
Parts are never changed in place (every write replaces the file), so the two names may share
their content; readers see a whole part or none. Two runs publishing the same part both
succeed and the last one stays (it holds every row its run had; rows only the other computed
are computed again by a later run that needs them). Deleting cache parts never breaks a run.

A part's modification time is when a run last took it from or gave it to the cache; a part
whose link count is 1 is held by no run directory on this filesystem (``prune --unreferenced``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..io.atomic import atomic_link, atomic_write_bytes, tmp_target
from ..io.location import Location, ObjectPath

__all__ = ["CACHE_ENV", "CachedPart", "NotACache", "PartCache", "resolve_cache"]

CACHE_ENV = "MMCURATE_CACHE"
"""Environment variable naming the default cache folder (none when unset or empty)."""
_log = logging.getLogger("mmcurate")
TAG = "CACHEDIR.TAG"
_TAG_TEXT = b"Signature: 8a477f597d28d172789f06886806bc55\n# An mmcurate annotation cache (https://bford.info/cachedir/)\n"
_PART = re.compile(r"[^/]+-[0-9a-f]{16}\.parquet")


class NotACache(ValueError):
    """The folder is not an mmcurate cache (it has no ``CACHEDIR.TAG`` of mmcurate)."""


def resolve_cache(cache: str | os.PathLike[str] | None) -> str | None:
    """The cache folder a run uses: ``cache``, else ``$MMCURATE_CACHE``, else none (absolute)."""
    chosen = os.path.expanduser(os.fspath(cache) if cache is not None else os.environ.get(CACHE_ENV, ""))
    return os.path.abspath(chosen) if chosen else None


@dataclass(frozen=True)
class CachedPart:
    """One part in the cache, as ``mmcurate cache ls`` shows it."""

    kind: str
    name: str
    size: int
    mtime: float
    links: int
    path: Path

    @property
    def runs(self) -> int:
        """How many other names (run directories) hold this part's content."""
        return self.links - 1


class PartCache:
    """The parts of one cache folder: take into a run, publish from a run, list, prune."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(os.path.abspath(root))

    def path(self, kind: str, name: str) -> Path:
        return self.root / kind / name

    def has(self, kind: str, name: str) -> bool:
        return self.path(kind, name).is_file()

    def take(self, kind: str, name: str, target: Location) -> bool:
        """Link the cached part ``kind/name`` to ``target`` (a part of a run) when the run lacks
        it; True if it did. Its time of last use is now."""
        source = self.path(kind, name)
        if target.exists() or not source.is_file():
            return False
        try:
            atomic_link(source, target)
        except FileNotFoundError:  # pruned meanwhile: the run computes it
            return False
        _touch(source)
        return True

    def publish(self, kind: str, name: str, source: Location, replace: bool = True) -> None:
        """Make the run's part ``source`` the cached ``kind/name`` (atomic; the last publisher
        stays); with ``replace`` False, only if the cache lacks it. A cache that cannot be
        written (read-only, full) is a warning: the run has its own part."""
        target = self.path(kind, name)
        try:
            if not source.exists() or _same_file(source, target) or (not replace and target.exists()):
                return
            if not (self.root / TAG).exists():
                atomic_write_bytes(self.root / TAG, _TAG_TEXT)
            atomic_link(source, target)
        except OSError as exc:
            _log.warning("mmcurate: warning: %s: not added to the cache (%s)", target, exc.strerror or exc)
            return
        _touch(target)

    def parts(self) -> Iterator[CachedPart]:
        """Every part in the cache, by kind and name."""
        if not self.root.is_dir():
            return
        for kind in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not kind.is_dir(follow_symlinks=False):
                continue
            for entry in sorted(os.scandir(kind.path), key=lambda e: e.name):
                if _PART.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    yield CachedPart(kind.name, entry.name, st.st_size, st.st_mtime, st.st_nlink, Path(entry.path))

    def prune(self, older_than_days: float | None = None, unreferenced: bool = False) -> list[CachedPart]:
        """Delete the parts last used more than ``older_than_days`` ago, and/or (``unreferenced``)
        those no run directory holds; the deleted parts. Only part files and the temporary files
        of part writes are ever deleted, and only in a folder marked as an mmcurate cache."""
        if not (self.root / TAG).is_file() or _TAG_TEXT.split(b"\n")[0] not in (self.root / TAG).read_bytes():
            raise NotACache(f"{self.root}: not an mmcurate cache (no {TAG}); nothing deleted")
        if older_than_days is None and not unreferenced:
            raise ValueError("prune needs --older-than DAYS or --unreferenced")
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        deleted = []
        for part in self.parts():
            if (cutoff is None or part.mtime < cutoff) and (not unreferenced or part.links <= 1):
                part.path.unlink(missing_ok=True)
                deleted.append(part)
        stale = time.time() - 86400 if cutoff is None else min(cutoff, time.time() - 3600)
        for kind in (e for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)):
            for entry in os.scandir(kind.path):  # temporary files a killed writer left
                target = tmp_target(entry.name)
                if target and _PART.fullmatch(target) and entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < stale:
                    os.unlink(entry.path)
        return deleted


def _same_file(a: Location, b: Location) -> bool:
    if isinstance(a, ObjectPath) or isinstance(b, ObjectPath):  # an object is never a cache file
        return False
    try:
        return os.path.samefile(a, b)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # pruned meanwhile, or a read-only cache: the part is still usable
        pass
