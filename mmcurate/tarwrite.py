"""Deterministic, atomic tar writing: the same members always give the same bytes."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid
from pathlib import Path
from typing import Iterable

__all__ = ["member_bytes", "write_tar"]


def member_bytes(size: int) -> int:
    """Bytes a member of ``size`` takes in a tar: a header block plus padded data."""
    return 512 + -(-size // 512) * 512


def write_tar(path: str | os.PathLike[str], members: Iterable[tuple[str, bytes]]) -> tuple[int, str]:
    """Write ``(name, data)`` members in order with fixed headers (mtime 0, uid/gid 0, mode 0644,
    GNU format) to a temporary file, then rename it to ``path``. Returns (size, md5 hex)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as raw:
            fh = _Md5Writer(raw)
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = 0
                    info.mode = 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return fh.size, fh.md5.hexdigest()


class _Md5Writer:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, raw: io.BufferedWriter):
        self.raw = raw
        self.md5 = hashlib.md5()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size
