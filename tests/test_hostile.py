"""Hostile shards are contained: no format sniffing, bounded memory, every capped sample dropped with a reason.

The media come from ``scripts/hostile_corpus.py`` (pure Python and Pillow): a PostScript
file in a ``.jpg`` member, a ``.tar.gz`` member of hundreds of MiB of zeros, flat PNGs of
many pixels and few bytes, a 30-minute silent FLAC of 300 KB.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import mmcurate
from conftest import REPO, image_bytes, make_shard
from mmcurate.engine import shard_task
from mmcurate.io import tarread
from mmcurate.decode import DecodeError
from mmcurate.steps.sampleview import SampleView
from mmcurate.io.tarread import Member, Sample, iter_samples

sys.path.insert(0, str(REPO / "scripts"))
from hostile_corpus import POSTSCRIPT, bomb_shard, flat_png, silent_flac, wav_claiming  # noqa: E402

pytestmark = pytest.mark.timeout(240)

BOMB = 300 << 20
"""A member over the default cap that compresses to a few hundred KB."""


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    assert BOMB > 256 << 20  # the default cap
    return bomb_shard(tmp_path_factory.mktemp("bomb") / "000000.tar.gz", BOMB)


def test_postscript_in_a_jpg_member_never_reaches_the_eps_plugin(tmp_path, client):
    """Images open only as the formats the recipe's extensions name: a PostScript ``.jpg`` is an
    unsupported format (EPS, named), a PNG in a ``.jpg`` member still decodes (PNG is allowed)."""
    shard = make_shard(
        tmp_path / "000000.tar",
        [
            ("good", {"jpg": image_bytes(seed=1), "txt": b"a photo"}),
            ("ps", {"jpg": POSTSCRIPT, "txt": b"a photo"}),
            ("png_as_jpg", {"jpg": image_bytes(seed=2, fmt="PNG"), "txt": b"a photo"}),
        ],
    )
    result = mmcurate.curate([str(shard)], "default", tmp_path / "out", client=client, quiet=True)
    rows = {r["key"]: r for r in mmcurate.open_run(result.out).decisions.to_pylist()}
    assert rows["ps"]["kept"] is False and rows["ps"]["step"] == "image_info"
    assert rows["ps"]["reason"].startswith("decode_error: unsupported format EPS"), rows["ps"]
    assert rows["good"]["kept"] and rows["png_as_jpg"]["kept"]


def test_a_recipe_naming_only_jpg_refuses_a_png(tmp_path):
    shard = make_shard(tmp_path / "000000.tar", [("png", {"jpg": image_bytes(fmt="PNG"), "txt": b"a photo"})])
    view = SampleView(next(iter_samples(str(shard))), {"image": ("jpg",)})
    with pytest.raises(DecodeError, match=r"unsupported format PNG \(the recipe's image extensions allow JPEG\)"):
        view.image()


def test_an_oversized_member_is_dropped_and_the_rest_kept(tmp_path, client, bomb):
    result = mmcurate.curate([str(bomb)], "default", tmp_path / "out", client=client, quiet=True)
    rows = {r["key"]: r for r in mmcurate.open_run(result.out).decisions.to_pylist()}
    assert set(rows) == {"b/000000", "b/000001", "b/000002"}
    assert rows["b/000001"]["kept"] is False and rows["b/000001"]["step"] == "read"
    assert rows["b/000001"]["reason"] == f"member_too_large: b/000001.bin ({BOMB} bytes > {tarread.MAX_MEMBER_BYTES})"
    assert rows["b/000000"]["kept"] and rows["b/000002"]["kept"]


def test_reading_past_an_oversized_member_holds_none_of_it(bomb):
    """Peak memory of a process reading the shard grows far less than the member's size
    (``VmHWM``: unlike ``ru_maxrss`` it does not carry over the forking parent's peak)."""
    script = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "from mmcurate.io.tarread import iter_samples\n"
        "peak = lambda: re.search(r'VmHWM:\\s*(\\d+)', Path('/proc/self/status').read_text()).group(1)\n"
        "before = peak()\n"
        "found = [(s.key, s.error) for s in iter_samples(sys.argv[1])]\n"
        "print(len(found), before, peak())\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, check=True, cwd=REPO)
    count, before_kib, peak_kib = map(int, out.stdout.split())
    assert count == 3
    grew = (peak_kib - before_kib) << 10
    assert grew < BOMB // 10, f"reading a shard with a {BOMB >> 20} MiB member took {grew >> 20} MiB more"


def test_batches_are_cut_by_decoded_size_not_compressed_size(tmp_path):
    """Flat PNGs: 30 KB each on disk, 36 MB each once decoded. A 64 MiB budget takes two per
    batch; captions alone, or images when no step reads pixels, fill a batch by their bytes."""
    flat = flat_png(3000, 3000)
    assert len(flat) < 100_000
    shard = make_shard(tmp_path / "000000.tar", [(f"k{i}", {"png": flat, "txt": b"flat"}) for i in range(7)])
    samples = list(iter_samples(str(shard)))
    modalities = {"image": ("png",), "text": ("txt",)}

    def sizes(pixels: bool) -> list[int]:
        items = ((shard_task.Entry(s.key, (), (), None), s) for s in samples)
        held = lambda s: shard_task._held_bytes(s, modalities, pixels)  # noqa: E731
        return [len(b) for b in shard_task._batches(items, 64, 64 << 20, held)]

    assert sizes(pixels=True) == [2, 2, 2, 1]
    assert sizes(pixels=False) == [7]


@pytest.mark.parametrize(
    "member, limits, reason",
    [
        ("flac", {}, "decode_error: audio too large (606 MiB decoded > 128 MiB, from the header)"),
        ("flac", {"max_duration_s": 600}, "decode_error: audio too long (1800 s > 600 s, from the header)"),
        ("wav", {}, "decode_error: audio too long (7200 s > 3600 s, from the header)"),
    ],
)
def test_long_audio_is_refused_from_its_header_without_decoding(member, limits, reason):
    """A 300 KB FLAC of 30 minutes of silence (606 MiB as float32) and a WAV whose header
    claims two hours: refused before any decoder (or decode process) starts."""
    data = silent_flac(1800) if member == "flac" else wav_claiming(7200)
    assert len(data) < 400_000
    view = SampleView(Sample("k", [Member(f"k.{member}", member, data)]), {"audio": (member,)})
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(DecodeError) as err:
        view.audio(**limits)
    assert str(err.value) == reason
    assert {p.pid for p in psutil.Process().children()} == before  # no decode process was needed


def test_a_decode_over_the_memory_limit_fails_with_a_memory_reason(tmp_path):
    """The decode child may grow by ``memory_mb`` per member: two minutes of real 48 kHz audio
    (11 MB as a WAV, 22 MiB as float32 samples) under a 16 MiB limit is refused with that reason,
    and the same child goes on serving the next member. Run in a fresh process, so its decode
    child starts clean (memory freed by earlier decodes could absorb the growth)."""
    (tmp_path / "two_minutes.wav").write_bytes(wav_claiming(120, channels=1, actual_s=120))
    script = f"""
import psutil
from mmcurate.decode import DecodeError
from mmcurate.decode.sandbox import decode_audio_limited
for data, limit in ((open({str(tmp_path / "two_minutes.wav")!r}, "rb").read(), 16), (b"not audio at all", 1024)):
    try:
        decode_audio_limited(data, memory_mb=limit)
    except DecodeError as exc:
        print(exc, "|", sorted(p.pid for p in psutil.Process().children()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    over, bad = done.stdout.splitlines()
    assert over.split(" | ")[0] == "decode_error: audio exceeded the decode memory limit (16 MiB)"
    assert "memory" not in bad and "died" not in bad
    assert over.split(" | ")[1] == bad.split(" | ")[1]  # the same child served the next member
