"""Deterministic, atomic tar writing: the same members always give the same bytes."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

from .atomic import atomic_append, atomic_file, copy_stream
from .location import Location, ObjectPath

__all__ = ["join_tar_pieces", "member_bytes", "sample_bytes", "write_tar", "write_tar_piece", "write_tar_samples"]


def member_bytes(size: int) -> int:
    """Bytes a member of ``size`` takes in a tar: a header block plus padded data."""
    return 512 + -(-size // 512) * 512


def sample_bytes(sizes: Iterable[int]) -> int:
    """Bytes a sample of members of ``sizes`` takes in a tar."""
    return sum(member_bytes(s) for s in sizes)


_PLAIN_FIELDS = b"0000644\x000000000\x000000000\x00"  # mode, uid, gid
_MTIME = b"00000000000\x00"
_TAIL = b"0" + bytes(100) + b"ustar  \x00" + bytes(512 - 265)  # type, link name, GNU magic, the rest empty
_FIXED_SUM = sum(_PLAIN_FIELDS) + sum(_MTIME) + sum(_TAIL) + 8 * 32  # the checksum field counts as spaces
_MAX_OCTAL_SIZE = 8**11 - 1  # larger sizes need GNU base-256, left to tarfile
_END = bytes(2 * tarfile.BLOCKSIZE)  # end-of-archive marker
_PADS = [bytes(n) for n in range(tarfile.BLOCKSIZE)]


def _header(name: str, size: int) -> bytes:
    """The member header: built directly for the common case (a name of at most 100 bytes, a
    size below 8 GiB), byte-identical to what :mod:`tarfile` writes, which handles the rest."""
    encoded = name.encode(tarfile.ENCODING, "surrogateescape")
    if len(encoded) > 100 or size > _MAX_OCTAL_SIZE:
        return _tarfile_header(name, size)
    size_field = b"%011o\x00" % size
    checksum = sum(encoded) + sum(size_field) + _FIXED_SUM
    return b"".join((encoded.ljust(100, b"\0"), _PLAIN_FIELDS, size_field, _MTIME, b"%06o\x00 " % checksum, _TAIL))


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")


def _write_members(fh: BinaryIO, members: Iterable[tuple[str, bytes]]) -> int:
    """Write ``members``; return the bytes written."""
    written = 0
    for name, data in members:
        size = len(data)
        header, pad = _header(name, size), _PADS[-size % tarfile.BLOCKSIZE]
        fh.writelines((header, data, pad))
        written += len(header) + size + len(pad)
    return written


def write_tar_piece(path: str | os.PathLike[str] | ObjectPath, members: Iterable[tuple[str, bytes]]) -> None:
    """Write ``(name, data)`` members with fixed headers (mtime 0, uid/gid 0, mode 0644, GNU
    format) and no end-of-archive marker, atomically (not fsync'd: a scratch file each run
    rewrites, made durable when joined): pieces concatenate into one tar."""
    with atomic_file(path, durable=False) as fh:
        _write_members(fh, members)


def write_tar_samples(path: str | os.PathLike[str] | ObjectPath, samples: Iterable[Iterable[tuple[str, bytes]]]) -> list[int]:
    """Write the members of each of ``samples`` in turn as one piece (see :func:`write_tar_piece`);
    return the bytes each sample took (its members start where the previous sample's end)."""
    with atomic_file(path, durable=False) as fh:
        return [_write_members(fh, members) for members in samples]


def join_tar_pieces(path: Location, pieces: Sequence[Location]) -> int:
    """Concatenate pieces and the end-of-archive marker into the tar ``path``, atomically, and
    delete the pieces. On local disk the others are appended to the first piece, which then
    becomes ``path`` (its bytes are never copied). Returns the tar's size in bytes."""
    local = isinstance(path, Path) and pieces and isinstance(pieces[0], Path)
    with atomic_append(pieces[0], path) if local else atomic_file(path) as out:  # type: ignore[arg-type]
        for piece in pieces[1:] if local else pieces:
            with piece.open("rb") as fh:
                copy_stream(fh, out)
        out.write(_END)
        size = out.tell()
    for piece in pieces[1:] if local else pieces:
        piece.unlink()
    return size


def write_tar(path: str | os.PathLike[str], members: Iterable[tuple[str, bytes]]) -> int:
    """Write a whole tar of ``(name, data)`` members (see :func:`write_tar_piece`), atomically.
    Returns its size in bytes."""
    with atomic_file(path) as fh:
        _write_members(fh, members)
        fh.write(_END)
    return Path(path).stat().st_size
