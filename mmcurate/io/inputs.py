"""Turn what a user typed (paths, globs, brace ranges, fsspec URLs) into an ordered shard list."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import fsspec
from braceexpand import braceexpand

from .tarread import open_stream

__all__ = ["InputError", "ShardRef", "hash_identity", "resolve_inputs"]


class InputError(ValueError):
    """An input that names no readable shard."""


@dataclass(frozen=True)
class ShardRef:
    """One input shard: its URL and an identity that changes when its content may have."""

    url: str
    identity: str
    unstamped: bool = False
    """Its filesystem reports no ETag, modification time or version: until :func:`hash_identity`
    adds a hash of its content, ``identity`` would not change when the content does."""

    @property
    def name(self) -> str:
        """File name without ``.tar``/``.tar.gz``, for human-readable part names."""
        base = self.url.rstrip("/").rsplit("/", 1)[-1]
        for suffix in (".tar.gz", ".tgz", ".tar"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


_STAMPS = (
    "mtime", "lastmodified", "last_modified", "last-modified", "etag",
    "versionid", "version_id", "generation", "md5hash", "content-md5", "digest", "updated",
)  # fmt: skip
"""Keys of ``fs.info()`` (any case) that change when a file's content does: local mtime, HTTP
``ETag``/``Last-Modified``, S3 ``ETag``/``VersionId``, GCS ``generation``/``md5Hash`` ..."""


def _identity(fs: fsspec.AbstractFileSystem, path: str, url: str) -> ShardRef:
    info = fs.info(path)
    if info.get("type") == "directory":
        raise InputError(f"{url}: is a directory; give shard files or a glob such as '{url.rstrip('/')}/*.tar'")
    found = {str(k).lower(): v for k, v in info.items() if v}
    stamp = ";".join(str(found[k]) for k in _STAMPS if k in found)
    return ShardRef(url, f"{url}|{info.get('size')}|{stamp}", unstamped=not stamp)


def hash_identity(ref: ShardRef) -> ShardRef:
    """``ref`` with the sha256 of its content in its identity (streams the whole shard; raises
    :class:`~mmcurate.io.tarread.ReadFailed` on an I/O error)."""
    sha = hashlib.sha256()
    with open_stream(ref.url) as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return replace(ref, identity=f"{ref.identity}sha256:{sha.hexdigest()}", unstamped=False)


def _expand(item: str) -> list[tuple[str, str, fsspec.AbstractFileSystem]]:
    """(fs path, url to report, filesystem) for each shard one brace-expanded item names."""
    fs, path = fsspec.core.url_to_fs(item)
    remote = "://" in item and not item.startswith("file://")
    if _has_glob(path) and not item.startswith(("http://", "https://")):
        matches = sorted(fs.glob(path))
        if not matches:
            raise InputError(f"{item}: no shard matches this pattern")
        return [(m, fs.unstrip_protocol(m) if remote else m, fs) for m in matches]
    return [(path, item if remote else path, fs)]


def resolve_inputs(inputs: list[str] | tuple[str, ...] | str) -> list[ShardRef]:
    """Expand braces and globs, check every shard exists, keep the order given (globs sorted).

    Raises :class:`InputError` naming the first input that matches nothing.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    refs: list[ShardRef] = []
    seen: set[str] = set()
    for pattern in inputs:
        for item in braceexpand(str(pattern)):
            for path, url, fs in _expand(item):
                if url in seen:
                    continue
                try:
                    ref = _identity(fs, path, url)
                except FileNotFoundError:
                    raise InputError(f"{url}: no such shard") from None
                except InputError:
                    raise
                except Exception as exc:  # network errors, permissions: say which input
                    raise InputError(f"{url}: cannot read shard ({exc})") from exc
                seen.add(url)
                refs.append(ref)
    if not refs:
        raise InputError("no input shards given")
    return refs
