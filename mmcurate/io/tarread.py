"""Stream samples out of a WebDataset tar shard, grouped by key the way webdataset does.

A member ``dir/000123.seg.jpg`` belongs to sample key ``dir/000123`` with extension
``seg.jpg`` (everything after the first dot of the file name, lower-cased for lookup).
Consecutive members with the same key form one sample. Nothing is decoded or unpickled
here: members are raw bytes.

Bad content never raises out of :func:`iter_samples`; it yields a :class:`Sample` whose
``error`` says what went wrong (unsafe member name, truncated tar, duplicate member, a
member over the size cap), so the caller can account for it. A member over the cap is
streamed past without being held: a small compressed shard cannot make a reader allocate
the gigabytes one of its members inflates to. An I/O error is not content: a failed read,
or a stream that ends before the size its filesystem reported, raises :class:`ReadFailed`
so the read is retried, never stored as a shorter shard. Shards are read as one sequential
stream (HTTP without ``Range`` requests), so every server that can send the file works.

Headers are parsed here rather than by :mod:`tarfile`, whose per-member cost was as large
as the rest of a cheap recipe: ustar, GNU (long names, base-256 sizes) and pax (``path``,
``size``) headers, plain or gzip/bzip2/xz-compressed streams.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import fsspec

__all__ = ["MAX_MEMBER_BYTES", "Member", "ReadFailed", "Sample", "UnreadableShard", "iter_samples", "open_stream", "read_sample_at", "samples_at", "split_key"]

MAX_MEMBER_BYTES = 256 << 20
"""Default cap on one member's size: a larger member is skipped unread and its sample dropped as
``member_too_large``. A member is held about twice while read, then decoded; 256 MiB keeps
that within a 1 GB worker and is far above any image, caption or clip a training set holds
(WebDataset shards themselves are typically 100 MB - 1 GB)."""

_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
BLOCK = 512
_REGULAR = {b"0", b"\0", b"7", b"S"}  # regular file, old regular file, contiguous, GNU sparse
_POSIX_MAGIC = b"ustar\x0000"
_GNU_LONGNAME, _GNU_LONGLINK, _PAX_LOCAL, _PAX_GLOBAL = b"L", b"K", b"x", b"g"
_COMPRESSED: tuple[tuple[bytes, Callable[[Any], BinaryIO]], ...] = (
    (b"\x1f\x8b", lambda fh: gzip.GzipFile(fileobj=fh)),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


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
    offset: int | None = None
    """Where the header of its first member starts in the shard (None in a compressed shard):
    :func:`read_sample_at` reads the sample from there."""

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


class ReadFailed(OSError):
    """An I/O error while reading a shard (network, filesystem, short read): not content damage;
    the read is retried and nothing from it is stored."""


class UnreadableShard(OSError):
    """The shard's content is not a tar at all (content damage, found at its first member)."""


class _Damaged(Exception):
    """The tar cannot be read past this point; ``str()`` says why."""


class _CutInData(_Damaged):
    """The stream ended inside a member's data."""


class _CutInHeader(_Damaged):
    """The stream ended inside a 512-byte header block."""


def _number(field_: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 when the high bit is set."""
    if field_[:1] and field_[0] & 0x80:
        value = int.from_bytes(field_[1:], "big")
        return value - (1 << (8 * len(field_) - 8)) if field_[0] == 0xFF else value
    text = field_.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise _Damaged(f"invalid number {bytes(field_)!r} in a member header") from None


def _text(field_: bytes) -> str:
    return field_.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 32  # old tars
    return stored == signed


def _pax_records(data: bytes) -> dict[str, str]:
    """``"LEN key=value\\n"`` records of a pax extended header."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space] or b"0")
        if length <= 0:
            break
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


_MAX_READ = 1 << 26
"""Bytes asked of the stream per read: a corrupt size field cannot make one read allocate
more than this (the member then ends as truncated, naming it)."""


def _read_exact(fh: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or fewer where the stream ends (compressed streams may return short reads)."""
    data = fh.read(min(size, _MAX_READ))
    if len(data) == size:
        return data
    parts, got = [data], len(data)
    while got < size:
        more = fh.read(min(size - got, _MAX_READ))
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _skip(fh: BinaryIO, size: int) -> int:
    """Read and discard ``size`` bytes, a chunk at a time; the number skipped (fewer at the end)."""
    left = size
    while left:
        got = len(fh.read(min(left, 1 << 20)))
        if not got:
            break
        left -= got
    return size - left


def _members(fh: BinaryIO, max_member_bytes: int, at: int = 0) -> Iterator[tuple[str, bytes | None, int, int]]:
    """``(name, data, size, offset)`` of each regular member, in order, until the end-of-archive
    marker or the end of the stream; ``data`` is None for a member over ``max_member_bytes``
    (skipped unread); ``offset``: where its first header block (a long name or pax header
    before it included) starts, the stream starting at byte ``at``. Raises :class:`_Damaged`
    (or a subclass) where the tar breaks."""
    long_name: str | None = None
    pax: dict[str, str] = {}
    first = True
    start: int | None = None
    while True:
        start = at if start is None else start
        header = _read_exact(fh, BLOCK)
        if not header and first:
            raise _Damaged("empty file")
        first = False
        if not header or header == bytes(BLOCK):
            return  # end of stream, or the end-of-archive marker
        if len(header) < BLOCK:
            raise _CutInHeader("cut inside a member header")
        if not _checksum_ok(header):
            raise _Damaged("bad checksum in a member header")
        kind = header[156:157]
        size = int(pax["size"]) if "size" in pax else _number(header[124:136])
        name = _text(header[0:100])
        if header[257:265] == _POSIX_MAGIC and header[345:346] != b"\0":
            name = f"{_text(header[345:500])}/{name}"
        name = pax.get("path", long_name or name)
        if size < 0:
            raise _Damaged(f"negative size for {name}")
        if size <= max_member_bytes:
            data: bytes | None = _read_exact(fh, size)
            got = len(data)
        elif kind in (_GNU_LONGNAME, _PAX_LOCAL, _GNU_LONGLINK, _PAX_GLOBAL):
            raise _Damaged(f"a {size}-byte extended header record")
        else:
            data, got = None, _skip(fh, size)
        if got < size:
            raise _CutInData(name)
        padding = -size % BLOCK
        cut = bool(padding) and len(_read_exact(fh, padding)) < padding
        at += BLOCK + size + padding
        if kind == _GNU_LONGNAME:
            long_name = _text(data or b"")
        elif kind == _PAX_LOCAL:
            pax = _pax_records(data or b"")
        elif kind not in (_GNU_LONGLINK, _PAX_GLOBAL):
            long_name, pax = None, {}
            if kind in _REGULAR and not (kind == b"\0" and name.endswith("/")):
                yield name, data, size, start
        if long_name is None and not pax and kind != _GNU_LONGLINK:
            start = None  # the next header starts the next member
        if cut:
            raise _CutInHeader("cut inside the padding after a member")


class _Prefixed:
    """A stream that returns ``head`` before the rest of ``fh`` (to sniff compression)."""

    def __init__(self, head: bytes, fh: BinaryIO):
        self.head, self.fh = head, fh

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.fh.read(size)
        if size < 0:
            data, self.head = self.head + self.fh.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data if len(data) == size else data + self.fh.read(size - len(data))


def _uncompressed(fh: BinaryIO) -> tuple[BinaryIO, bool]:
    """The tar stream of ``fh`` and whether it was compressed."""
    head = fh.read(BLOCK)
    stream: BinaryIO = _Prefixed(head, fh)  # type: ignore[assignment]
    for magic, opener in _COMPRESSED:
        if head.startswith(magic):
            return opener(stream), True
    return stream, False


class _Checked:
    """A raw shard stream whose failures and early end raise :class:`ReadFailed`."""

    def __init__(self, url: str, fh: BinaryIO, size: int | None):
        self.url, self.fh, self.size, self.got = url, fh, size, 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.fh.read(size)
        except Exception as exc:  # whatever the transport raises (aiohttp, botocore ...) is I/O
            raise ReadFailed(f"{self.url}: read failed after {self.got} bytes ({type(exc).__name__}: {exc})") from exc
        self.got += len(data)
        if not data and size != 0 and self.size is not None and self.got < self.size:
            raise ReadFailed(f"{self.url}: stream ended after {self.got} of {self.size} bytes")
        return data


@contextlib.contextmanager
def open_stream(url: str) -> Iterator[BinaryIO]:
    """The raw bytes of ``url`` (local path or fsspec URL) as one sequential stream.

    HTTP is streamed with a single GET (no ``Range`` requests). Raises :class:`ReadFailed`
    when the file cannot be opened or read, or ends before the size its filesystem reported.
    """
    try:
        if "://" not in url:  # a local path: opened directly, without fsspec's wrapper around every read
            fh = open(url, "rb")  # noqa: SIM115 (closed below)
            size = os.fstat(fh.fileno()).st_size
        else:
            fh, size = _open_fsspec(url)
    except Exception as exc:
        raise ReadFailed(f"{url}: cannot open ({type(exc).__name__}: {exc})") from exc
    with fh:
        yield _Checked(url, fh, size)  # type: ignore[misc]


def _open_fsspec(url: str) -> tuple[BinaryIO, int | None]:
    fs, path = fsspec.core.url_to_fs(url)
    size = fs.size(path)
    if "http" in fs.protocol:
        return fs.open(path, "rb", block_size=0, size=size), size  # streaming: servers need no Range support
    return fs.open(path, "rb"), size


def iter_samples(url: str, max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[Sample]:
    """Yield every sample of the shard at ``url`` (local path or fsspec URL), in tar order.

    A member larger than ``max_member_bytes`` is skipped without being held; its sample
    comes with the error ``member_too_large: NAME (N bytes > LIMIT)`` and that member empty.
    Raises :class:`UnreadableShard` if the shard is not a tar at all, :class:`ReadFailed` on
    an I/O error (then the samples yielded so far are not the whole shard).
    """
    with open_stream(url) as fh:
        stream, compressed = _uncompressed(fh)
        yield from _group(url, _members(stream, max_member_bytes), max_member_bytes, offsets=not compressed)


def read_sample_at(url: str, offset: int, max_member_bytes: int = MAX_MEMBER_BYTES) -> Sample:
    """The sample whose first member's header starts at byte ``offset`` of the (uncompressed)
    shard ``url`` (its :attr:`Sample.offset`), read without streaming what lies before it.

    Raises :class:`UnreadableShard` when no tar member starts there, :class:`ReadFailed` on an I/O error."""
    return next(samples_at(url, [(offset, None)], max_member_bytes))


Expected = tuple[str, Sequence[str], Sequence[int]]
"""A sample as its shard's manifest recorded it: key, member names, member sizes."""


def samples_at(
    url: str, spans: Iterable[tuple[int, int | None]], max_member_bytes: int = MAX_MEMBER_BYTES, expected: Sequence[Expected] = ()
) -> Iterator[Sample]:
    """The sample in each ``(start, end)`` byte range of the (uncompressed) shard ``url``, one
    open file for all: ``start`` its :attr:`Sample.offset`, ``end`` the next sample's (None: the
    sample ends where the next key starts or the archive ends). With ``expected`` (one per
    span), a range that holds exactly those members, each behind one plain header naming it,
    is cut into them without parsing the tar. Raises :class:`UnreadableShard` when no tar
    member starts at a ``start``, :class:`ReadFailed` on an I/O error."""
    try:
        if "://" not in url:
            fh: BinaryIO = open(url, "rb")  # noqa: SIM115 (closed below)
        else:
            fs, path = fsspec.core.url_to_fs(url)
            fh = fs.open(path, "rb")
    except Exception as exc:
        raise ReadFailed(f"{url}: cannot open ({type(exc).__name__}: {exc})") from exc
    with fh:
        for i, (start, end) in enumerate(spans):
            try:
                fh.seek(start)
                data = None if end is None else _read_exact(fh, end - start)
            except Exception as exc:
                raise ReadFailed(f"{url}: cannot read at byte {start} ({type(exc).__name__}: {exc})") from exc
            found = _plain(data, start, *expected[i]) if expected and data is not None else None
            if found is None:
                stream = fh if data is None else io.BytesIO(data)
                found = next(_group(url, _members(stream, max_member_bytes, start), max_member_bytes, offsets=True), None)
            if found is None:
                raise UnreadableShard(f"{url}: no sample at byte {start}")
            yield found


def _plain(data: bytes, start: int, key: str, names: Sequence[str], sizes: Sequence[int]) -> Sample | None:
    """The sample ``key`` when ``data`` is exactly its members ``names`` of ``sizes``, each behind
    one regular-file header holding its whole name and size (what most writers produce); None
    otherwise (then the range is parsed)."""
    if len(data) != sum(BLOCK + -(-size // BLOCK) * BLOCK for size in sizes):
        return None
    members, at = [], 0
    for name, size in zip(names, sizes):
        header, raw, parts = data[at : at + BLOCK], name.encode("utf-8", "surrogateescape"), split_key(name)
        if len(raw) > 100 or header[:100] != raw.ljust(100, b"\0") or header[156:157] not in _REGULAR or header[345:346] != b"\0":
            return None
        if parts is None or parts[0] != key or _number(header[124:136]) != size:
            return None
        members.append(Member(name=name, ext=parts[1].lower(), data=data[at + BLOCK : at + BLOCK + size]))
        at += BLOCK + -(-size // BLOCK) * BLOCK
    return Sample(key=key, members=members, offset=start)


def _group(url: str, members: Iterator[tuple[str, bytes | None, int, int]], max_member_bytes: int, offsets: bool) -> Iterator[Sample]:
    current: Sample | None = None
    while True:
        try:
            found = next(members, None)
        except _CutInData as exc:
            name = str(exc)
            key = (split_key(name) or (name, ""))[0]
            if current is not None and current.key != key:
                yield current
                current = None
            current = current or Sample(key=key)
            current.error = f"read_error: truncated tar inside {name} (unexpected end of data)"
            yield current
            return
        except ReadFailed:
            raise  # I/O, not content: the caller retries the read
        except (_Damaged, OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:  # bad gzip/bz2 data, too
            if current is None:
                raise UnreadableShard(f"{url}: not a readable tar file ({exc})") from None
            kind = "truncated tar" if isinstance(exc, _CutInHeader) else "tar damaged"
            current.error = current.error or f"read_error: {kind} after {current.key} ({exc})"
            yield current
            return
        if found is None:
            break
        name, data, size, offset = found
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
            current = Sample(key=key, offset=offset if offsets else None)
        if _unsafe(name):
            current.error = current.error or f"unsafe_name: {name}"
        elif any(m.ext == ext.lower() for m in current.members):
            current.error = current.error or f"duplicate_member: {name}"
        elif data is None:
            current.error = current.error or f"member_too_large: {name} ({size} bytes > {max_member_bytes})"
        current.members.append(Member(name=name, ext=ext.lower(), data=data or b""))
    if current is not None:
        yield current
