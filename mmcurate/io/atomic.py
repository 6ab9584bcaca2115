"""The one atomic-write helper: Parquet parts, JSON, reports and tars all go through it.

A file is written to a hidden temporary name beside its target, flushed and fsync'd, renamed
over the target, and the directory is fsync'd, so a reader (or a rerun after a crash) sees the
old file or the whole new one. On failure the temporary file is removed and the error names the
target path.

On an object store (an :class:`~mmcurate.io.location.ObjectPath`) nothing is renamed: the
content is spooled to a local temporary file and sent as one whole object (``put_file``, which
S3, GCS and Azure make visible only once complete), so readers see the old object or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

from .location import ObjectPath, naming

__all__ = ["atomic_append", "atomic_file", "atomic_link", "atomic_write_bytes", "copy_stream", "tmp_target"]

_STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}
"""Errors of writing: raised by the temporary file, reported under the target's path."""
_TMP = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")


def _tmp_name(path: Path) -> Path:
    """``.NAME.XXXXXXXX.tmp`` beside ``path``: where :func:`atomic_file` writes it first."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def tmp_target(name: str) -> str | None:
    """The file name that ``name``, a temporary file of :func:`atomic_file`, was to become
    (left by a killed writer); None for any other name."""
    match = _TMP.fullmatch(name)
    return match.group(1) if match else None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each made durable in its parent."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync_dir(new.parent)


def atomic_file(path: str | os.PathLike[str] | ObjectPath, durable: bool = True) -> contextlib.AbstractContextManager[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` atomically once the block ends.

    An exception inside the block (or while writing) leaves ``path`` untouched and no
    temporary file behind; an error of writing (a full or read-only disk) is re-raised naming
    ``path``. Without ``durable`` a local file is not fsync'd: for scratch files a run always
    rewrites (output pieces), which a crash of the machine may lose but never leaves half-written.
    """
    return _whole_object(path) if isinstance(path, ObjectPath) else _renamed_file(Path(path), durable)


@contextlib.contextmanager
def _whole_object(path: ObjectPath) -> Iterator[BinaryIO]:
    with tempfile.NamedTemporaryFile(prefix="mmcurate-", suffix=".tmp") as fh:
        yield fh  # type: ignore[misc]
        fh.flush()
        with naming(path):
            path.fs.put_file(fh.name, path.path)


@contextlib.contextmanager
def _renamed_file(path: Path, durable: bool = True) -> Iterator[BinaryIO]:
    tmp = _tmp_name(path)
    try:
        _make_dirs(path.parent)
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except OSError as exc:
        ours = str(exc.filename) == str(tmp) or (exc.filename is None and exc.errno in _STORAGE_ERRNOS)
        if not ours:  # e.g. reading what is being copied: that error names its own source
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp.exists():  # only after a failure
            tmp.unlink()


@contextlib.contextmanager
def atomic_append(scratch: Path, path: Path) -> Iterator[BinaryIO]:
    """Yield the local file ``scratch`` opened for appending; once the block ends it is fsync'd
    and renamed over ``path``, atomically (see :func:`atomic_file`): a file built from a scratch
    file without copying its bytes. On failure ``scratch`` is left as it is (a run rewrites it)."""
    try:
        _make_dirs(path.parent)
        with open(scratch, "r+b") as fh:  # not "ab": copy_file_range refuses O_APPEND files
            fh.seek(0, os.SEEK_END)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(scratch, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.filename is not None or exc.errno not in _STORAGE_ERRNOS:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def atomic_write_bytes(path: str | os.PathLike[str] | ObjectPath, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_link(source: str | os.PathLike[str] | ObjectPath, path: str | os.PathLike[str] | ObjectPath) -> None:
    """Make ``path`` the file ``source`` is, atomically: a hard link renamed over ``path`` (a
    copy written by :func:`atomic_file` where links are not possible, e.g. across filesystems
    or to or from an object store).

    Only for files never changed in place (every mmcurate write replaces the file), so the two
    names can share their content."""
    if isinstance(source, ObjectPath) or isinstance(path, ObjectPath):
        _copy(source, path)
        return
    path = Path(path)
    _make_dirs(path.parent)
    tmp = _tmp_name(path)
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        _copy(source, path)
        return
    try:
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():  # only after a failure
            tmp.unlink()


def _copy(source: str | os.PathLike[str] | ObjectPath, path: str | os.PathLike[str] | ObjectPath) -> None:
    with (source if isinstance(source, ObjectPath) else Path(source)).open("rb") as src, atomic_file(path) as fh:
        copy_stream(src, fh)


def copy_stream(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy the rest of ``src`` to ``dst``: in the kernel (``copy_file_range``) between two local
    files, without passing the bytes through Python; through a buffer otherwise (object storage)."""
    try:
        fds = src.fileno(), dst.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fds = None
    if fds is not None and hasattr(os, "copy_file_range"):
        dst.flush()
        offset = src.tell()  # a buffered reader's fd may already be ahead of it
        try:
            while copied := os.copy_file_range(*fds, 1 << 30, offset):
                offset += copied
            return
        except OSError as exc:  # e.g. a filesystem or kernel without it: copy what is left below
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ETXTBSY):
                raise
            src.seek(offset)
    shutil.copyfileobj(src, dst, 1 << 22)
