"""Turn what a user typed (paths, globs, brace ranges, fsspec URLs) into an ordered shard list."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import fsspec
from braceexpand import braceexpand
from fsspec.implementations.local import LocalFileSystem

from .tarread import open_stream

__all__ = ["InputError", "ShardRef", "hash_identity", "resolve_inputs", "shard_identity"]


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
    def content(self) -> str:
        """The identity less the URL it starts with: size and stamps (and a content hash), which a
        copy that keeps them (``cp -p``, ``rsync -t``, ``mv``, an object copy with its ETag) shares."""
        return self.identity[len(self.url) + 1 :] if self.identity.startswith(self.url + "|") else self.identity

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


def _identity(url: str, info: dict) -> ShardRef:
    """The shard ``url`` with the identity its ``fs.info()`` (or listing entry) ``info`` gives it."""
    if info.get("type") == "directory":
        raise InputError(f"{url}: is a directory; give shard files or a glob such as '{url.rstrip('/')}/*.tar'")
    found = {str(k).lower(): v for k, v in info.items() if v}
    stamp = ";".join(str(found[k]) for k in _STAMPS if k in found)
    return ShardRef(url, f"{url}|{info.get('size')}|{stamp}", unstamped=not stamp)


def shard_identity(url: str) -> ShardRef:
    """The shard ``url`` with the identity :func:`resolve_inputs` would give it (one ``fs.info``)."""
    fs, path = fsspec.core.url_to_fs(url)
    return _identity(url, fs.info(path))


def hash_identity(ref: ShardRef) -> ShardRef:
    """``ref`` with the sha256 of its content in its identity (streams the whole shard; raises
    :class:`~mmcurate.io.tarread.ReadFailed` on an I/O error)."""
    sha = hashlib.sha256()
    with open_stream(ref.url) as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return replace(ref, identity=f"{ref.identity}sha256:{sha.hexdigest()}", unstamped=False)


LIST_AT = 16
"""List a folder once, instead of asking about each file, when at least this many named shards
sit in it (filesystems with listings only: object stores, memory, ...)."""

LOOKUPS_AT_ONCE = 32
"""Per-file look-ups (HTTP ``HEAD``, object ``info``) in flight at once, at most."""


@dataclass
class _Named:
    path: str
    fs: fsspec.AbstractFileSystem
    info: dict | Exception | None = None
    """What ``fs.info(path)`` said (or a listing said for it), or what it raised."""


def _lists(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether one listing of a folder beats asking about its files one by one. Not on local
    disks: a ``stat`` is a system call, not a request, and a listing's ``stat`` of a symlink
    differs from ``info``'s, which would change identities. Not over HTTP: it has no listing."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return not isinstance(fs, LocalFileSystem) and not protocols & {"http", "https"}


def _expand(item: str) -> list[tuple[str, _Named]]:
    """(url to report, where to find it) for each shard one brace-expanded item names; a glob
    over a filesystem with listings brings each match's info along."""
    fs, path = fsspec.core.url_to_fs(item)
    remote = "://" in item and not item.startswith("file://")
    if _has_glob(path) and not item.startswith(("http://", "https://")):
        matches = fs.glob(path, detail=True) if _lists(fs) else dict.fromkeys(fs.glob(path))
        if not matches:
            raise InputError(f"{item}: no shard matches this pattern")
        return [(fs.unstrip_protocol(m) if remote else m, _Named(m, fs, matches[m])) for m in sorted(matches)]
    return [(item if remote else path, _Named(path, fs))]


def _folders(named: list[_Named]) -> list[list[_Named]]:
    """The shards of ``named`` still unknown, grouped by folder, for the folders worth listing:
    those holding at least :data:`LIST_AT` of them, on filesystems with listings."""
    folders: dict[tuple[int, str], list[_Named]] = defaultdict(list)
    for shard in named:
        if shard.info is None and _lists(shard.fs):
            folders[id(shard.fs), shard.fs._parent(shard.path)].append(shard)
    return [shards for shards in folders.values() if len(shards) >= LIST_AT]


def _list(shards: list[_Named]) -> None:
    """Fill in the ``info`` of ``shards`` (one folder's) from one listing of that folder; a
    listing that fails (no permission to list, say) or lacks a file leaves it to be asked alone."""
    fs = shards[0].fs
    try:
        listing = {fs._strip_protocol(e["name"]).rstrip("/"): e for e in fs.ls(fs._parent(shards[0].path), detail=True)}
    except Exception:
        return
    for shard in shards:
        shard.info = listing.get(shard.path.rstrip("/"))


def _ask(shard: _Named) -> None:
    try:
        shard.info = shard.fs.info(shard.path)
    except Exception as exc:
        shard.info = exc


def _look_up(named: list[_Named]) -> None:
    """Fill in every shard's ``info``: from folder listings where they pay, else one question per
    file; remote requests :data:`LOOKUPS_AT_ONCE` at a time, local ``stat`` calls in turn."""
    with ThreadPoolExecutor(LOOKUPS_AT_ONCE, thread_name_prefix="mmcurate-inputs") as pool:
        list(pool.map(_list, _folders(named)))
        list(pool.map(_ask, [s for s in named if s.info is None and not isinstance(s.fs, LocalFileSystem)]))
    for shard in named:
        if shard.info is None:
            _ask(shard)


def resolve_inputs(inputs: list[str] | tuple[str, ...] | str) -> list[ShardRef]:
    """Expand braces and globs, check every shard exists, keep the order given (globs sorted).

    Folders of many named shards on object stores are listed once; other shards are looked up
    one by one, remote ones concurrently (:data:`LOOKUPS_AT_ONCE`). Raises :class:`InputError`
    naming the first input that matches nothing.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    named: dict[str, _Named] = {}
    unmatched: InputError | None = None
    try:
        for pattern in inputs:
            for item in braceexpand(str(pattern)):
                for url, shard in _expand(item):
                    named.setdefault(url, shard)
    except InputError as exc:  # the shards named before it are checked first
        unmatched = exc
    _look_up(list(named.values()))
    refs = [_checked(url, shard.info) for url, shard in named.items()]
    if unmatched is not None:
        raise unmatched
    if not refs:
        raise InputError("no input shards given")
    return refs


def _checked(url: str, info: dict | Exception | None) -> ShardRef:
    if isinstance(info, FileNotFoundError):
        raise InputError(f"{url}: no such shard") from None
    if isinstance(info, Exception):  # network errors, permissions: say which input
        raise InputError(f"{url}: cannot read shard ({info})") from info
    assert info is not None
    return _identity(url, info)
