"""Deterministic, atomic tar writing: the same members always give the same bytes."""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Iterable

__all__ = ["join_tar_pieces", "member_bytes", "write_tar", "write_tar_piece"]


def member_bytes(size: int) -> int:
    """Bytes a member of ``size`` takes in a tar: a header block plus padded data."""
    return 512 + -(-size // 512) * 512


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")


def _atomic(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def write_tar_piece(path: str | os.PathLike[str], members: Iterable[tuple[str, bytes]]) -> None:
    """Write ``(name, data)`` members with fixed headers (mtime 0, uid/gid 0, mode 0644, GNU
    format) and no end-of-archive marker, atomically: pieces concatenate into one tar."""
    path = Path(path)
    tmp = _atomic(path)
    try:
        with open(tmp, "wb") as fh:
            for name, data in members:
                fh.write(_header(name, len(data)))
                fh.write(data)
                fh.write(bytes(-len(data) % tarfile.BLOCKSIZE))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def join_tar_pieces(path: str | os.PathLike[str], pieces: Iterable[Path]) -> int:
    """Concatenate pieces and the end-of-archive marker into the tar ``path``, atomically.
    Returns its size in bytes."""
    path = Path(path)
    tmp = _atomic(path)
    try:
        with open(tmp, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
            out.write(bytes(2 * tarfile.BLOCKSIZE))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def write_tar(path: str | os.PathLike[str], members: Iterable[tuple[str, bytes]]) -> int:
    """Write a whole tar of ``(name, data)`` members (see :func:`write_tar_piece`), atomically.
    Returns its size in bytes."""
    path = Path(path)
    piece = _atomic(path)
    try:
        write_tar_piece(piece, members)
        return join_tar_pieces(path, [piece])
    finally:
        piece.unlink(missing_ok=True)
