"""Where a run directory lives: a local folder, or a prefix on an fsspec object store.

A local folder is a :class:`pathlib.Path`. A prefix on any other fsspec filesystem (``s3://``,
``gs://``, ``az://``, ``memory://`` ...) is an :class:`ObjectPath`, which offers the same small
part of the ``pathlib`` face the store uses (``/``, ``name``, ``parent``, ``exists``,
``iterdir``, ``unlink`` ...), so code written against a ``Path`` works on both. Objects are
written whole, once (:func:`mmcurate.io.atomic.atomic_file`), never renamed; a folder is only a
prefix, so making or removing one does nothing. The filesystem comes from the URL the way input
shards' do (``fsspec.core.url_to_fs``): credentials and endpoints from the environment or
fsspec's configuration (``AWS_ENDPOINT_URL``, ``FSSPEC_S3_ENDPOINT_URL``, see docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from pathlib import Path
from typing import IO, Any, Iterator, Union

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

__all__ = ["Location", "ObjectPath", "dataset", "file_names", "inside", "location", "naming", "read_table", "read_whole"]


class ObjectPath:
    """``path`` (without protocol) on the fsspec filesystem ``fs``: the pathlib subset the store uses.

    Every question about what exists asks the store afresh (fsspec's listing cache would not
    see objects that other machines wrote)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        self.fs = fs
        self.path = path.rstrip("/")

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str) -> "ObjectPath":
        return ObjectPath(self.fs, f"{self.path}/{name}")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(self.fs, self.path.rsplit("/", 1)[0] if "/" in self.path else self.path)

    def relative_to(self, other: Any) -> Path:
        """The part of this path below ``other``; ``ValueError`` when it is not below it (as pathlib)."""
        if not isinstance(other, ObjectPath) or not self.path.startswith(other.path + "/"):
            raise ValueError(f"{self} is not in the subpath of {other}")
        return Path(self.path[len(other.path) + 1 :])

    def _fresh(self) -> fsspec.AbstractFileSystem:
        self.fs.invalidate_cache(self.path)
        return self.fs

    def exists(self) -> bool:
        return self._fresh().exists(self.path)

    def is_file(self) -> bool:
        return self._fresh().isfile(self.path)

    def is_dir(self) -> bool:
        return self._fresh().isdir(self.path)

    def is_symlink(self) -> bool:
        return False

    def iterdir(self) -> Iterator["ObjectPath"]:
        fs = self._fresh()
        if not fs.isdir(self.path):
            raise FileNotFoundError(str(self))
        return (self / entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(self.path, detail=False))

    def glob(self, pattern: str) -> Iterator["ObjectPath"]:
        return (self / name for name in file_names(self) if fnmatch.fnmatchcase(name, pattern))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists once an object under it does."""

    def rmdir(self) -> None:
        """Nothing to do: a prefix disappears with its last object."""

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not self.exists():
            raise FileNotFoundError(str(self))
        self.fs.rm_file(self.path)

    def open(self, mode: str = "rb") -> IO[bytes]:
        """Open for reading (writes go through :func:`mmcurate.io.atomic.atomic_file`)."""
        if mode != "rb":
            raise ValueError(f"{self}: objects are written whole through atomic_file, not opened with {mode!r}")
        return self.fs.open(self.path, "rb")

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


Location = Union[Path, ObjectPath]


@contextlib.contextmanager
def naming(path: ObjectPath) -> Iterator[None]:
    """Re-raise an ``OSError`` of a request about ``path`` (a missing bucket, a denied write) as
    one naming it; ``FileExistsError`` (a conditional write refused) passes unchanged."""
    try:
        yield
    except FileExistsError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def location(where: str | os.PathLike[str] | ObjectPath) -> Location:
    """The absolute local :class:`~pathlib.Path` of a path, or the :class:`ObjectPath` of a URL
    on a filesystem other than the local one."""
    if isinstance(where, ObjectPath):
        return where
    text = os.fspath(where)
    if _is_url(text):
        fs, path = fsspec.core.url_to_fs(text)
        if not isinstance(fs, LocalFileSystem):
            return ObjectPath(fs, path)
        text = path
    return Path(os.path.abspath(text))


def inside(folder: Location, url: str) -> bool:
    """Whether the input ``url`` (a path or URL) lies inside ``folder``."""
    if isinstance(folder, ObjectPath):
        if not _is_url(url):
            return False
        fs, path = fsspec.core.url_to_fs(url)
        return type(fs) is type(folder.fs) and (path.rstrip("/") + "/").startswith(folder.path + "/")
    if _is_url(url):
        return False
    root, path = os.path.realpath(folder), os.path.realpath(url.removeprefix("file://"))
    return os.path.commonpath([root, path]) == root


def file_names(folder: Location) -> list[str]:
    """Names of the files (not folders) directly in ``folder``; empty when it does not exist."""
    if isinstance(folder, ObjectPath):
        fs = folder._fresh()
        if not fs.isdir(folder.path):
            return []
        return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(folder.path, detail=True) if e["type"] != "directory"]
    if not folder.is_dir():
        return []
    return [e.name for e in os.scandir(folder) if not e.is_dir(follow_symlinks=False)]


def read_whole(path: Location, **kwargs: Any) -> pa.Table:
    """A Parquet file read from one open file, or on an object store fetched whole in one request
    (parts are one shard's rows), so a file replaced meanwhile reads whole, old or new."""
    if isinstance(path, ObjectPath):
        return pq.read_table(pa.BufferReader(path.read_bytes()), **kwargs)
    with pa.OSFile(str(path)) as fh:
        return pq.read_table(fh, **kwargs)


def read_table(path: Location, **kwargs: Any) -> pa.Table:
    """``pyarrow.parquet.read_table`` of a file (or a folder of them) wherever it lives; an
    object is fetched whole (:func:`read_whole`)."""
    if isinstance(path, ObjectPath):
        try:
            return read_whole(path, **kwargs)
        except FileNotFoundError:
            if not path.is_dir():
                raise
        return pq.read_table(path.path, filesystem=path.fs, **kwargs)
    return pq.read_table(path, **kwargs)


def dataset(path: Location, **kwargs: Any) -> ds.Dataset:
    """``pyarrow.dataset.dataset`` of a file or folder of Parquet files wherever it lives."""
    if isinstance(path, ObjectPath):
        return ds.dataset(path.path, filesystem=path.fs, **kwargs)
    return ds.dataset(path, **kwargs)
