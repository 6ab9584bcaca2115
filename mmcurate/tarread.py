"""Stream samples out of a WebDataset tar shard, grouped by key the way webdataset does.

A member ``dir/000123.seg.jpg`` belongs to sample key ``dir/000123`` with extension
``seg.jpg`` (everything after the first dot of the file name, lower-cased for lookup).
Consecutive members with the same key form one sample. Nothing is decoded or unpickled
here: members are raw bytes.

Bad input never raises out of :func:`iter_samples`; it yields a :class:`Sample` whose
``error`` says what went wrong (unsafe member name, truncated tar, duplicate member), so
the caller can account for it.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

import fsspec

__all__ = ["Member", "Sample", "iter_samples", "split_key"]

_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass(frozen=True)
class Member:
    """One tar member of a sample: its original name, lower-cased extension and bytes."""

    name: str
    ext: str
    data: bytes


@dataclass
class Sample:
    """All members of one key, in tar order; ``error`` is set when the sample is unusable."""

    key: str
    members: list[Member] = field(default_factory=list)
    error: str | None = None

    def get(self, ext: str) -> bytes | None:
        for m in self.members:
            if m.ext == ext:
                return m.data
        return None

    @property
    def nbytes(self) -> int:
        return sum(len(m.data) for m in self.members)


def split_key(name: str) -> tuple[str, str] | None:
    """``"a/b.seg.jpg" -> ("a/b", "seg.jpg")``; None for names without an extension."""
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2)) if m else None


def _unsafe(name: str) -> bool:
    return name.startswith("/") or ".." in name.split("/") or "\\" in name or "\x00" in name


def _cut_inside_header(tar: tarfile.TarFile) -> bool:
    """True when the tar ended partway through a 512-byte header, which ``tarfile`` ignores.

    After the last member, tarfile reads one block where the next header would be: a whole
    zero block is the end-of-archive marker; fewer bytes mean the file was cut there.
    """
    consumed = getattr(tar.fileobj, "pos", None)
    return consumed is not None and 0 < consumed - tar.offset < tarfile.BLOCKSIZE


def iter_samples(url: str) -> Iterator[Sample]:
    """Yield every sample of the shard at ``url`` (local path or fsspec URL), in tar order.

    Raises only if the shard cannot be opened at all (missing file, not a tar).
    """
    with fsspec.open(url, "rb") as fh:
        try:
            tar = tarfile.open(fileobj=fh, mode="r|*")
        except tarfile.TarError as exc:
            raise OSError(f"{url}: not a readable tar file ({exc})") from exc
        yield from _group(tar)


def _group(tar: tarfile.TarFile) -> Iterator[Sample]:
    current: Sample | None = None
    while True:
        try:
            info = tar.next()
        except (tarfile.TarError, EOFError, OSError) as exc:
            if current is not None:
                current.error = current.error or f"read_error: tar damaged after {current.key} ({exc})"
                yield current
            else:
                yield Sample(key="<unreadable>", error=f"read_error: tar damaged ({exc})")
            return
        if info is None:
            if current is not None and _cut_inside_header(tar):
                current.error = current.error or f"read_error: truncated tar after {current.key} (cut inside a member header)"
            break
        if not info.isreg():
            continue
        name = info.name
        if "/" not in name and name.startswith("__") and name.endswith("__"):
            continue  # webdataset's meta members; not sample data
        parts = split_key(name)
        if parts is None:
            continue  # webdataset skips members without an extension, so do we
        key, ext = parts
        if current is not None and current.key != key:
            yield current
            current = None
        if current is None:
            current = Sample(key=key)
        try:
            reader = tar.extractfile(info)
            data = reader.read() if reader is not None else b""
            if len(data) != info.size:
                raise tarfile.ReadError("unexpected end of data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            current.error = f"read_error: truncated tar inside {name} ({exc})"
            yield current
            return
        if _unsafe(name):
            current.error = current.error or f"unsafe_name: {name}"
        elif any(m.ext == ext.lower() for m in current.members):
            current.error = current.error or f"duplicate_member: {name}"
        current.members.append(Member(name=name, ext=ext.lower(), data=data))
    if current is not None:
        yield current
