"""Deterministic, atomic tar writing: the same members always give the same bytes."""

from __future__ import annotations

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


def write_tar(path: str | os.PathLike[str], members: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(name, data)`` members in order with fixed headers (mtime 0, uid/gid 0, mode 0644,
    GNU format) to a temporary file, then rename it to ``path``. Returns its size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = 0
                    info.mode = 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size
