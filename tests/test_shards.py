"""Shard reading and writing: webdataset's grouping, byte-for-byte copies, wids-readable output.

These tests also run in the compatibility environment (webdataset 0.2.86 beside open_clip's
training extra), so they use only what both webdataset lines offer.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
import webdataset as wds

import mmcurate
from conftest import image_bytes, make_shard, simple_samples
from mmcurate.io.tarread import iter_samples, read_sample_at, samples_at


def _wds_samples(path):
    dataset = wds.WebDataset(str(path), shardshuffle=False)
    return [{k: v for k, v in s.items() if not k.startswith("__")} | {"__key__": s["__key__"]} for s in dataset]


def test_members_are_grouped_by_key_like_webdataset(tmp_path):
    members = [
        ("a/000.jpg", image_bytes(seed=1)),
        ("a/000.seg.png", b"png-bytes"),
        ("a/000.TXT", b"upper-case extension"),
        ("a/001.jpg", image_bytes(seed=2)),
        ("a/001.json", b'{"x": 1}'),
        ("b.c/002.tar.gz", b"nested extension"),
        ("noext", b"skipped by both"),
    ]
    from mmcurate.io.tarwrite import write_tar

    path = tmp_path / "s.tar"
    write_tar(path, members)
    ours = [{"__key__": s.key, **{m.ext: m.data for m in s.members}} for s in iter_samples(str(path))]
    assert ours == _wds_samples(path)
    assert [s["__key__"] for s in ours] == ["a/000", "a/001", "b.c/002"]


@pytest.fixture(scope="module")
def curated(tmp_path_factory, client):
    src = tmp_path_factory.mktemp("src")
    shards = []
    for s in range(3):
        samples = simple_samples(f"s{s}-", 7, seed=s)
        samples[0][1]["pickle"] = b"\x80\x04K\x01."  # copied as bytes, never unpickled
        samples[1][1]["npy"] = b"\x93NUMPY fake"
        shards.append(make_shard(src / f"{s:06d}.tar", samples))
    out = tmp_path_factory.mktemp("out") / "run"
    result = mmcurate.curate(
        [str(p) for p in shards], "default", out, client=client, quiet=True, overrides=["output.samples_per_shard=5"]
    )
    return shards, result


def _read_members(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_kept_samples_are_copied_byte_for_byte(curated):
    shards, result = curated
    source = {}
    for shard in shards:
        source.update(_read_members(shard))
    copied = {}
    for shard in result.shards:
        copied.update(_read_members(shard))
    originals = {k: v for k, v in copied.items() if not k.endswith(".mmcurate.json")}
    assert len(originals) == len(source)  # every member of every (kept) sample
    assert all(source[name] == data for name, data in originals.items())
    note = json.loads(copied["s0-00000.mmcurate.json"])
    assert note["source"]["key"] == "s0-00000" and note["annotations"]["width"] == 96


def test_output_shards_follow_samples_per_shard_with_deterministic_names(curated):
    _, result = curated
    assert [p.name for p in result.shards] == [f"curated-{i:06d}.tar" for i in range(5)]
    counts = [len({n.split(".")[0] for n in _read_members(p)}) for p in result.shards]
    assert counts == [5, 5, 5, 5, 1]


def test_output_shards_sets_the_shard_count_for_small_outputs(curated, tmp_path, client):
    """21 kept samples, ``output.shards: 4``: four shards of ceil(21 / 4) = 6, 6, 6 and 3 samples
    (a DataLoader with 4 workers gets one each), whatever ``samples_per_shard`` says."""
    shards, _ = curated
    result = mmcurate.curate([str(p) for p in shards], "default", tmp_path / "run", client=client, quiet=True, overrides=["output.shards=4"])
    counts = [len({n.split(".")[0] for n in _read_members(p)}) for p in result.shards]
    assert counts == [6, 6, 6, 3]
    with pytest.raises(mmcurate.RecipeError, match="'shards': expected a positive integer"):
        mmcurate.Recipe.load("default", ["output.shards=0"])


def test_index_json_opens_with_wids_and_webdataset(curated):
    import wids

    _, result = curated
    index = result.out / "shards" / "index.json"
    doc = json.loads(index.read_text())
    assert doc["__kind__"] == "wids-shard-index-v1"
    dataset = wids.ShardListDataset(str(index))
    assert len(dataset) == result.kept == 21
    assert dataset[0]["__key__"] == "s0-00000"
    text = dataset[20][".txt"]  # wids decodes .txt to str by default
    assert (text.decode() if isinstance(text, bytes) else text) == "a photo number 6"
    streamed = wds.WebDataset([str(p) for p in result.shards], shardshuffle=False)
    assert sum(1 for _ in streamed) == 21


def test_max_shard_bytes_splits_shards(tmp_path, client):
    shard = make_shard(tmp_path / "000000.tar", simple_samples("k", 6))
    one_sample = sum(512 + -(-len(d) // 512) * 512 for d in simple_samples("k", 1)[0][1].values())
    result = mmcurate.curate(
        str(shard),
        "default",
        tmp_path / "run",
        client=client,
        quiet=True,
        overrides=[f"output.max_shard_bytes={2 * one_sample + 600}", "output.annotations_member=false"],
    )
    sizes = [len({n.split(".")[0] for n in _read_members(p)}) for p in result.shards]
    assert sizes == [2, 2, 2]


def test_same_input_and_recipe_give_identical_bytes(tmp_path, client):
    shard = make_shard(tmp_path / "000000.tar", simple_samples("k", 8))
    first = mmcurate.curate(str(shard), "default", tmp_path / "a", client=client, quiet=True)
    second = mmcurate.curate(str(shard), "default", tmp_path / "b", client=client, quiet=True)
    assert [p.read_bytes() for p in first.shards] == [p.read_bytes() for p in second.shards]
    decisions = [sorted(p.read_bytes() for p in (r.out / "decisions.parquet").iterdir()) for r in (first, second)]
    assert decisions[0] == decisions[1]


def _tarfile_members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isreg()]


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [(tarfile.USTAR_FORMAT, "w"), (tarfile.GNU_FORMAT, "w"), (tarfile.PAX_FORMAT, "w"), (tarfile.PAX_FORMAT, "w:gz"),
     (tarfile.GNU_FORMAT, "w:bz2"), (tarfile.GNU_FORMAT, "w:xz")],
    ids=["ustar", "gnu", "pax", "pax-gzip", "gnu-bzip2", "gnu-xz"],
)
def test_reader_agrees_with_tarfile_on_every_header_format(tmp_path, fmt, mode):
    """Long names (ustar prefix, GNU long-name members, pax path records), non-ASCII names,
    directories and links (skipped), empty members and compressed streams."""
    deep = "/".join(["d" * 40] * 3)  # 122 characters of directories: beyond the 100-byte name field
    names = [f"{deep}/000.jpg", f"{deep}/000.txt", "caf\u00e9/001.jpg", "caf\u00e9/001.json", "x/002.txt"]
    payloads = [image_bytes(seed=1), b"a caption", image_bytes(seed=2), b"{}", b""]
    path = tmp_path / "s.tar"
    with tarfile.open(path, mode, format=fmt) as tar:
        folder = tarfile.TarInfo("x")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in zip(names, payloads):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("x/003.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    ours = [(m.name, m.data) for s in iter_samples(str(path)) for m in s.members]
    assert ours == _tarfile_members(path) == list(zip(names, payloads))
    streamed = list(iter_samples(str(path)))
    assert all(s.error is None for s in streamed)
    if mode == "w":  # each sample read alone at its offset, as the writer and the report do: the same
        ends = [s.offset for s in streamed[1:]] + [None]
        expected = [(s.key, [m.name for m in s.members], [len(m.data) for m in s.members]) for s in streamed]
        assert list(samples_at(str(path), [(s.offset, end) for s, end in zip(streamed, ends)], expected=expected)) == streamed
        assert [read_sample_at(str(path), s.offset) for s in streamed] == streamed
    else:
        assert {s.offset for s in streamed} == {None}  # a compressed stream has no byte offsets to seek to


class _Digest:
    """A write-only file that keeps the SHA-256 and length of what is written, not the bytes."""

    def __init__(self):
        self.sha, self.size = hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


class _Ones(io.RawIOBase):
    """``size`` bytes of 0xff, made as they are read."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = b"\xff" * n
        self.left -= n
        return n


@pytest.mark.parametrize("name", ["a/000.jpg", "x" * 96 + ".jpg", "y" * 120 + ".jpg", "caf\u00e9/1.txt", "k.__key__.json"])
@pytest.mark.parametrize("size", [0, 1, 512, 123_456_789])
def test_member_headers_equal_tarfiles(name, size):
    """A tar of one member written as ours are (our header, the data, padding, end marker) is
    the archive :mod:`tarfile` writes for that member, long names (GNU long-name blocks) included."""
    from mmcurate.io.tarwrite import _header

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    theirs = _Digest()
    with tarfile.open(fileobj=theirs, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, _Ones(size))

    ours = _Digest()
    ours.write(_header(name, size))
    data = _Ones(size)
    while chunk := data.read(1 << 20):
        ours.write(chunk)
    ours.write(bytes(-size % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE))
    ours.write(bytes(-ours.size % tarfile.RECORDSIZE))
    assert (ours.sha.hexdigest(), ours.size) == (theirs.sha.hexdigest(), theirs.size)
