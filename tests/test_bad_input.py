"""Bad input through the real engine: every broken sample is accounted for, nothing crashes.

Each test writes real tar shards, runs :func:`mmcurate.curate` on the shared Dask
LocalCluster and checks what a user would see: the broken sample is in
``decisions.parquet`` with ``kept=False`` and a reason saying why, the good samples are
kept and copied to the output shards, and the counts add up.
"""

from __future__ import annotations

import io
import os
import pickle
import shlex
import tarfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pytest
from PIL import Image

import mmcurate
from conftest import image_bytes, make_shard, simple_samples

pytestmark = pytest.mark.timeout(120)

ANNOTATIONS_EXT = ".mmcurate.json"


# --------------------------------------------------------------------------- helpers


def _curate(tmp_path: Path, client, shards: Iterable[Path], overrides: Iterable[str] = (), name: str = "out"):
    """Run the default recipe; return the result and its decisions as a list of dicts."""
    out = tmp_path / name
    result = mmcurate.curate([str(s) for s in shards], "default", out, overrides=list(overrides), client=client, quiet=True)
    rows = mmcurate.open_run(out).decisions.to_pylist()
    return result, rows


def _by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {r["key"]: r for r in rows}
    assert len(found) == len(rows), "keys in these tests are unique across shards"
    return found


def _output_members(result) -> dict[str, bytes]:
    """Every member of every output shard, name -> bytes (names are unique across shards)."""
    members: dict[str, bytes] = {}
    for shard in result.shards:
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                assert info.name not in members
                members[info.name] = tar.extractfile(info).read()
    return members


def _output_keys(result) -> set[str]:
    return {name[: -len(ANNOTATIONS_EXT)] for name in _output_members(result) if name.endswith(ANNOTATIONS_EXT)}


def _check(result, rows, n_input: int, dropped: Mapping[str, tuple[str, str]]) -> None:
    """Accounting and verdicts: ``dropped`` maps key -> (step, reason prefix); all other keys kept."""
    assert len(rows) == n_input == result.samples_in
    assert result.kept + result.dropped == result.samples_in
    assert result.kept == sum(r["kept"] for r in rows)
    assert result.dropped == len(dropped)
    by_key = _by_key(rows)
    for key, (step, prefix) in dropped.items():
        row = by_key[key]
        assert row["kept"] is False, row
        assert row["step"] == step, row
        assert row["reason"].startswith(prefix), row
        assert row["output_shard"] is None
    kept = {k for k, r in by_key.items() if r["kept"]}
    assert kept == set(by_key) - set(dropped)
    for key in kept:
        assert by_key[key]["step"] is None and by_key[key]["reason"] is None
        assert by_key[key]["output_shard"] is not None
    # The output shards hold exactly the kept samples.
    assert _output_keys(result) == kept


def _sample(key: str, seed: int, **members: bytes) -> tuple[str, dict[str, bytes]]:
    base = {"jpg": image_bytes(seed=seed), "txt": f"a photo of thing {seed}".encode(), "json": b"{}"}
    base.update(members)
    return key, {ext: data for ext, data in base.items() if data is not None}


def _write_raw_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """A tar whose member names are written exactly as given (no sanitising)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def _sparse_png(width: int, height: int) -> bytes:
    """A real, valid, all-black 1-bit PNG: huge in pixels, a few KB on disk."""
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- image decoding


def test_corrupt_and_truncated_jpeg_are_dropped_by_image_info(tmp_path, client):
    good = image_bytes(seed=3)
    truncated = good[: len(good) // 2]
    assert Image.open(io.BytesIO(truncated)).format == "JPEG"  # the header still parses
    shard = make_shard(
        tmp_path / "000000.tar",
        [
            _sample("ok0", 1),
            _sample("garbage", 2, jpg=b"this is not a jpeg at all" * 40),
            _sample("magic_garbage", 4, jpg=b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(4).integers(0, 256, 2000, dtype=np.uint8))),
            _sample("truncated", 3, jpg=truncated),
            _sample("ok1", 5),
        ],
    )
    result, rows = _curate(tmp_path, client, [shard])
    _check(
        result,
        rows,
        5,
        {
            "garbage": ("image_info", "decode_error"),
            "magic_garbage": ("image_info", "decode_error"),
            "truncated": ("image_info", "decode_error"),
        },
    )
    assert "truncated" in _by_key(rows)["truncated"]["reason"]


def test_zero_byte_image_member(tmp_path, client):
    shard = make_shard(tmp_path / "000000.tar", [_sample("ok0", 1), _sample("empty", 2, jpg=b""), _sample("ok1", 3)])
    result, rows = _curate(tmp_path, client, [shard])
    _check(result, rows, 3, {"empty": ("image_info", "decode_error")})
    assert "empty image" in _by_key(rows)["empty"]["reason"]


def test_sample_without_image(tmp_path, client):
    shard = make_shard(
        tmp_path / "000000.tar",
        [_sample("ok0", 1), _sample("noimage", 2, jpg=None), _sample("ok1", 3)],
    )
    result, rows = _curate(tmp_path, client, [shard])
    _check(result, rows, 3, {"noimage": ("image_info", "missing_image")})


def test_other_image_extensions_are_decoded(tmp_path, client):
    """png/webp members count as the image; a corrupt png is a decode error like a jpg."""
    shard = make_shard(
        tmp_path / "000000.tar",
        [
            _sample("as_png", 1, jpg=None, png=image_bytes(seed=1, fmt="PNG")),
            _sample("as_webp", 2, jpg=None, webp=image_bytes(seed=2, fmt="WEBP")),
            _sample("bad_png", 3, jpg=None, png=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
        ],
    )
    result, rows = _curate(tmp_path, client, [shard])
    _check(result, rows, 3, {"bad_png": ("image_info", "decode_error")})
    formats = {r["key"]: r["format"] for r in mmcurate.open_run(result.out).annotations().to_pylist() if "format" in r}
    assert formats["as_png"] == "PNG" and formats["as_webp"] == "WEBP"


# --------------------------------------------------------------------------- decompression bombs


def test_image_over_default_pixel_limit_is_refused(tmp_path, client):
    bomb = _sparse_png(20000, 20000)  # 400 Mpixel
    over = _sparse_png(10000, 10000)  # 100 Mpixel, just over the 89.5 Mpixel default
    assert len(bomb) < 100_000 and len(over) < 100_000
    shard = make_shard(
        tmp_path / "000000.tar",
        [_sample("ok0", 1), _sample("bomb", 2, jpg=None, png=bomb), _sample("over", 3, jpg=None, png=over), _sample("ok1", 4)],
    )
    result, rows = _curate(tmp_path, client, [shard])
    _check(result, rows, 4, {"bomb": ("image_info", "decode_error"), "over": ("image_info", "decode_error")})
    for key in ("bomb", "over"):
        reason = _by_key(rows)[key]["reason"]
        assert "too large" in reason or "decompression bomb" in reason, reason


def test_max_pixels_override_refuses_from_the_header(tmp_path, client):
    small = image_bytes(width=30, height=30, seed=7)  # 900 pixels: under the limit
    shard = make_shard(tmp_path / "000000.tar", [_sample("big", 1), _sample("small", 2, jpg=small)])
    result, rows = _curate(
        tmp_path, client, [shard], overrides=["image_info.max_pixels=1000", "image_size.expr=width >= 1"]
    )
    _check(result, rows, 2, {"big": ("image_info", "decode_error: image too large")})
    assert "96x80" in _by_key(rows)["big"]["reason"]


def test_max_pixels_override_can_admit_large_images(tmp_path, client):
    large = _sparse_png(10000, 10000)  # 100 Mpixel, allowed by the 200 Mpixel limit below
    shard = make_shard(tmp_path / "000000.tar", [_sample("large", 1, jpg=None, png=large)])
    result, rows = _curate(tmp_path, client, [shard], overrides=["image_info.max_pixels=200000000"])
    _check(result, rows, 1, {})


# --------------------------------------------------------------------------- captions


def test_default_recipe_drops_bad_captions_by_the_caption_step(tmp_path, client):
    shard = make_shard(
        tmp_path / "000000.tar",
        [
            _sample("ok0", 1),
            _sample("latin1", 2, txt="café photo".encode("latin-1")),
            _sample("binary", 3, txt=b"\xff\xfe\x00garbage \xc3\x28"),
            _sample("empty", 4, txt=b""),
            _sample("blank", 5, txt=b"  \n\t "),
            _sample("notext", 6, txt=None),
            _sample("ok1", 7, txt="ünïcödé ✓ caption".encode()),
        ],
    )
    result, rows = _curate(tmp_path, client, [shard])
    _check(
        result,
        rows,
        7,
        {
            "latin1": ("caption", "fails caption_valid_utf8"),
            "binary": ("caption", "fails caption_valid_utf8"),
            "empty": ("caption", "fails caption_words >= 1"),
            "blank": ("caption", "fails caption_words >= 1"),
            "notext": ("caption_info", "missing_text"),
        },
    )
    notes = {r["key"]: r for r in mmcurate.open_run(result.out).annotations().to_pylist()}
    assert notes["latin1"]["caption_valid_utf8"] is False
    assert notes["ok1"]["caption_valid_utf8"] is True and notes["ok1"]["caption_words"] == 3


# --------------------------------------------------------------------------- damaged tars


def _members_of(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


@pytest.mark.parametrize("cut_in", ["last_member", "last_image"])
def test_truncated_tar(tmp_path, client, cut_in):
    """The shard is cut short inside a member's data: the samples before it are kept."""
    full = make_shard(tmp_path / "full.tar", simple_samples("t", 3, seed=1))
    members = _members_of(full)
    victim = members[-1] if cut_in == "last_member" else [m for m in members if m.name.endswith(".jpg")][-1]
    assert victim.name.startswith("t00002.")
    data = full.read_bytes()
    shard = tmp_path / "000000.tar"
    shard.write_bytes(data[: victim.offset_data + victim.size // 2])
    full.unlink()
    other = make_shard(tmp_path / "000001.tar", simple_samples("u", 2, seed=2))

    result, rows = _curate(tmp_path, client, [shard, other])
    _check(result, rows, 5, {"t00002": ("read", "read_error")})
    assert "truncated" in _by_key(rows)["t00002"]["reason"]

    # A second identical call resumes from what is stored and decides the same.
    again, rows_again = _curate(tmp_path, client, [shard, other])
    assert rows_again == rows and again.kept == result.kept
    assert again.computed == {"image_info": 0, "caption_info": 0, "sha256": 0}


def test_tar_cut_inside_a_member_header(tmp_path, client):
    full = make_shard(tmp_path / "full.tar", simple_samples("h", 3, seed=3))
    last = _members_of(full)[-1]  # h00002.json
    shard = tmp_path / "000000.tar"
    shard.write_bytes(full.read_bytes()[: last.offset + 200])
    full.unlink()
    result, rows = _curate(tmp_path, client, [shard])
    _check(result, rows, 3, {"h00002": ("read", "read_error")})


def test_corrupt_member_size_drops_that_sample_without_exhausting_memory(tmp_path, client):
    """A header whose size field claims a petabyte (checksum still valid) ends the shard as
    truncated at that member instead of asking for the memory (a MemoryError killed the task)."""
    shard = make_shard(tmp_path / "000000.tar", simple_samples("z", 3, seed=4))
    victim = [m for m in _members_of(shard) if m.name == "z00001.jpg"][0]
    raw = bytearray(shard.read_bytes())
    header = slice(victim.offset, victim.offset + 512)
    block = raw[header]
    block[124:136] = b"\x80" + (1 << 50).to_bytes(11, "big")  # GNU base-256 size
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    raw[header] = block
    shard.write_bytes(bytes(raw))
    result, rows = _curate(tmp_path, client, [shard])
    _check(result, rows, 2, {"z00001": ("read", "read_error")})
    assert "truncated tar inside z00001.jpg" in _by_key(rows)["z00001"]["reason"]


def test_shard_that_is_not_a_tar(tmp_path, client):
    a = make_shard(tmp_path / "a.tar", simple_samples("a", 2, seed=1))
    junk = tmp_path / "x.tar"
    junk.write_bytes(np.random.default_rng(7).bytes(4096))
    b = make_shard(tmp_path / "b.tar", simple_samples("b", 2, seed=2))

    result, rows = _curate(tmp_path, client, [a, junk, b])
    # 2 + 2 samples plus one row standing for the unreadable shard.
    assert len(rows) == result.samples_in == 5
    assert result.kept == 4 and result.kept + result.dropped == result.samples_in
    bad = [r for r in rows if r["shard"] == str(junk)]
    assert len(bad) == 1
    assert bad[0]["kept"] is False and bad[0]["step"] == "read"
    assert bad[0]["reason"].startswith("read_error") and "not a readable tar" in bad[0]["reason"]
    good = [r for r in rows if r["shard"] != str(junk)]
    assert [r["key"] for r in good] == ["a00000", "a00001", "b00000", "b00001"]
    assert all(r["kept"] for r in good)
    assert _output_keys(result) == {"a00000", "a00001", "b00000", "b00001"}

    again, rows_again = _curate(tmp_path, client, [a, junk, b])
    assert rows_again == rows
    assert again.computed == {"image_info": 0, "caption_info": 0, "sha256": 0}


def test_empty_file_named_tar_is_recorded(tmp_path, client):
    a = make_shard(tmp_path / "a.tar", simple_samples("a", 2, seed=1))
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    result, rows = _curate(tmp_path, client, [empty, a])
    bad = [r for r in rows if r["shard"] == str(empty)]
    assert len(bad) == 1 and bad[0]["step"] == "read" and bad[0]["reason"].startswith("read_error")
    assert result.kept == 2 and result.samples_in == 3


# --------------------------------------------------------------------------- unsafe member names


def test_unsafe_member_names_are_dropped_and_never_written(tmp_path, client):
    etc_target = Path("/etc/x.jpg")
    existed = etc_target.exists()
    ok0, ok1 = image_bytes(seed=1), image_bytes(seed=4)
    shard = _write_raw_tar(
        tmp_path / "000000.tar",
        [
            ("ok0.jpg", ok0),
            ("ok0.txt", b"a fine photo"),
            ("../evil.jpg", image_bytes(seed=2)),
            ("../evil.txt", b"escape upwards"),
            ("/etc/x.jpg", image_bytes(seed=3)),
            ("/etc/x.txt", b"absolute path"),
            ("sub/../../up.jpg", image_bytes(seed=5)),
            ("sub/../../up.txt", b"escape through a folder"),
            ("ok1.jpg", ok1),
            ("ok1.txt", b"another fine photo"),
        ],
    )
    result, rows = _curate(tmp_path, client, [shard])
    _check(
        result,
        rows,
        5,
        {
            "../evil": ("read", "unsafe_name"),
            "/etc/x": ("read", "unsafe_name"),
            "sub/../../up": ("read", "unsafe_name"),
        },
    )
    written = _output_members(result)
    assert not any(name.startswith("/") or ".." in name.split("/") for name in written)
    assert written["ok0.jpg"] == ok0 and written["ok1.jpg"] == ok1
    assert etc_target.exists() == existed
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "up.jpg").exists()
    assert not (result.out / "evil.jpg").exists()


# --------------------------------------------------------------------------- pickles are never loaded


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_pickle_members_are_copied_never_unpickled(tmp_path, client):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Payload(marker))
    # The payload is live: loading an identical one elsewhere does create its marker.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()

    members = {
        "jpg": image_bytes(seed=11),
        "txt": b"a photo with pickled extras",
        "json": b'{"a": 1}',
        "pyd": payload,
        "pickle": payload,
    }
    shard = make_shard(tmp_path / "000000.tar", [_sample("ok0", 1), ("pickled", members), _sample("ok1", 2)])
    result, rows = _curate(tmp_path, client, [shard])
    _check(result, rows, 3, {})
    assert not marker.exists()

    written = _output_members(result)
    for ext, data in members.items():
        assert written[f"pickled.{ext}"] == data
    assert {n for n in written if n.startswith("pickled.")} == {f"pickled.{e}" for e in members} | {"pickled" + ANNOTATIONS_EXT}
    mmcurate.open_run(result.out).annotations()  # reading the run back loads nothing either
    assert not marker.exists()


# --------------------------------------------------------------------------- everything at once


def test_mixed_bad_input_across_shards_adds_up(tmp_path, client):
    s0 = make_shard(
        tmp_path / "000000.tar",
        [_sample("m0", 1), _sample("m_empty", 2, jpg=b""), _sample("m_bad_utf8", 3, txt=b"\xff\xfe"), _sample("m1", 4)],
    )
    s1 = tmp_path / "000001.tar"
    s1.write_bytes(np.random.default_rng(1).bytes(2048))
    full = make_shard(tmp_path / "full.tar", [_sample("n0", 5), _sample("n_noimg", 6, jpg=None), _sample("n1", 7), _sample("n_cut", 8)])
    last = _members_of(full)[-1]
    s2 = tmp_path / "000002.tar"
    s2.write_bytes(full.read_bytes()[: last.offset_data + last.size // 2])
    full.unlink()
    s3 = make_shard(tmp_path / "000003.tar", [_sample("dup_of_m0", 1), _sample("p0", 9)])  # same image bytes as m0

    result, rows = _curate(tmp_path, client, [s0, s1, s2, s3])
    assert len(rows) == result.samples_in == 4 + 1 + 4 + 2
    assert result.kept + result.dropped == result.samples_in
    by_shard: dict[str, int] = {}
    for r in rows:
        by_shard[Path(r["shard"]).name] = by_shard.get(Path(r["shard"]).name, 0) + 1
    assert by_shard == {"000000.tar": 4, "000001.tar": 1, "000002.tar": 4, "000003.tar": 2}
    verdicts = {r["key"]: (r["step"], (r["reason"] or "").split(":")[0].split(" ")[0]) for r in rows if not r["kept"]}
    assert verdicts == {
        "m_empty": ("image_info", "decode_error"),
        "m_bad_utf8": ("caption", "fails"),
        "<unreadable>": ("read", "read_error"),
        "n_noimg": ("image_info", "missing_image"),
        "n_cut": ("read", "read_error"),
        "dup_of_m0": ("dedup_exact", "duplicate_of"),
    }
    assert _output_keys(result) == {"m0", "m1", "n0", "n1", "p0"}
    assert sum(f.dropped for f in result.funnel) == result.dropped
