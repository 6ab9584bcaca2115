"""``blocklist:`` steps: planted md5, sha256 and PDQ hashes are dropped through the real engine,
a changed list re-decides from stored rows, and blocklisted samples are never shown or written."""

from __future__ import annotations

import io
import re
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate.cli import main
from mmcurate.recipe import RecipeError
from mmcurate.steps.blocklist import BlocklistIndex
from mmcurate.steps.pdq import pdq_distance, pdq_hash, pdq_luma
from mmcurate.views.browse import Gallery
from mmcurate.views.report import write_report


def _blocks(seed: int, size=(256, 192)) -> Image.Image:
    """A picture of 16-pixel colour blocks: high PDQ quality, and stable under resizing."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(cells, np.ones((16, 16, 1), np.uint8)))


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _pdq(data: bytes) -> tuple[str, int]:
    return pdq_hash(pdq_luma(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))


@pytest.fixture()
def planted(tmp_path):
    """A shard whose samples are: one listed by md5, one by sha256, one by PDQ and its resized
    copy, a different picture, and plain samples; the list files, and the recipe."""
    original = _encode(_blocks(1), "PNG")
    resized = _encode(_blocks(1).resize((192, 144), Image.BILINEAR), "JPEG")
    images = {
        "md5_hit": image_bytes(seed=11),
        "sha_hit": image_bytes(seed=12),
        "pdq_hit": original,
        "pdq_resized": resized,
        "other_picture": _encode(_blocks(2), "PNG"),
        "plain_a": image_bytes(seed=13),
        "plain_b": image_bytes(seed=14),
    }
    samples = [(key, {"png" if data[:4] == b"\x89PNG" else "jpg": data, "txt": f"secret caption of {key}".encode()}) for key, data in images.items()]
    shard = make_shard(tmp_path / "000000.tar", samples)
    import hashlib

    lists = {
        "md5": tmp_path / "bad-md5.txt",
        "sha256": tmp_path / "bad-sha256.txt",
        "pdq": tmp_path / "bad-pdq.txt",
    }
    lists["md5"].write_text(f"# known files\n{hashlib.md5(images['md5_hit']).hexdigest()}\n\n")
    lists["sha256"].write_text(hashlib.sha256(images["sha_hit"]).hexdigest().upper() + "  # upper case is fine\n")
    lists["pdq"].write_text(_pdq(original)[0] + "\n")
    recipe = {
        "name": "blocked",
        "modalities": {"image": ["jpg", "png"], "text": ["txt"]},
        "steps": [
            {"annotate": "md5"},
            {"annotate": "sha256"},
            {"annotate": "pdq"},
            {"blocklist": "md5", "list": str(lists["md5"])},
            {"blocklist": "sha256", "list": str(lists["sha256"])},
            {"blocklist": "pdq", "list": str(lists["pdq"]), "max_distance": 31},
            {"annotate": "caption_info"},
        ],
    }
    return shard, images, lists, recipe


def _decisions(result):
    return {r["key"]: r for r in pq.read_table(result.decisions_path).to_pylist()}


def _written_keys(result):
    keys = set()
    for path in result.shards:
        with tarfile.open(path) as tar:
            keys |= {m.name.split(".", 1)[0] for m in tar.getmembers()}
    return keys


def test_planted_hashes_are_dropped_and_never_written(planted, tmp_path, client):
    shard, images, _, recipe = planted
    # The resized copy is a near, not an exact, PDQ match; the other picture is far.
    near = pdq_distance(_pdq(images["pdq_hit"])[0], _pdq(images["pdq_resized"])[0])
    assert 0 < near <= 31 and pdq_distance(_pdq(images["pdq_hit"])[0], _pdq(images["other_picture"])[0]) > 31
    result = mmcurate.curate(str(shard), mmcurate.Recipe.from_dict(recipe), tmp_path / "run", client=client, quiet=True)
    d = _decisions(result)
    assert d["md5_hit"]["step"] == "blocklist_md5" and d["md5_hit"]["reason"] == "blocklisted:bad-md5.txt"
    assert d["sha_hit"]["reason"] == "blocklisted:bad-sha256.txt"
    assert d["pdq_hit"]["reason"] == d["pdq_resized"]["reason"] == "blocklisted:bad-pdq.txt"
    assert {k for k, r in d.items() if r["kept"]} == {"other_picture", "plain_a", "plain_b"}
    assert _written_keys(result) == {"other_picture", "plain_a", "plain_b"}


def test_a_changed_list_re_decides_without_computing_a_row(planted, tmp_path, client):
    shard, images, lists, recipe = planted
    out = tmp_path / "run"
    mmcurate.curate(str(shard), mmcurate.Recipe.from_dict(recipe), out, client=client, quiet=True)
    with open(lists["sha256"], "a") as fh:
        import hashlib

        fh.write(hashlib.sha256(images["plain_a"]).hexdigest() + "\n")
    again = mmcurate.curate(str(shard), mmcurate.Recipe.from_dict(recipe), out, client=client, quiet=True, overwrite=True)
    assert set(again.computed.values()) == {0}
    assert _decisions(again)["plain_a"]["reason"] == "blocklisted:bad-sha256.txt"
    assert "plain_a" not in _written_keys(again)


def test_blocklisted_samples_are_never_shown(planted, tmp_path, client, capsys):
    shard, images, _, recipe = planted
    # A filter before the blocklists drops plain_b: it was never checked, so it is withheld too.
    recipe["steps"].insert(3, {"filter": "md5 != '" + __import__("hashlib").md5(images["plain_b"]).hexdigest() + "'"})
    result = mmcurate.curate(str(shard), mmcurate.Recipe.from_dict(recipe), tmp_path / "run", client=client, quiet=True)
    hidden = {"md5_hit", "sha_hit", "pdq_hit", "pdq_resized", "plain_b"}
    html = write_report(result.out).read_text()
    figures = re.findall(r'<figure class="thumb">.*?</figure>', html, flags=re.S)
    shown = {re.search(r"<b>(.*?)</b>", f).group(1): f for f in figures}
    assert hidden & set(shown), "the report shows the blocklist's drops (as grey boxes)"
    for key in hidden & set(shown):
        assert "<img" not in shown[key] and "withheld" in shown[key]
    for key in hidden:
        assert f"secret caption of {key}" not in html
    assert "<img" in shown["other_picture"]

    run = mmcurate.open_run(result.out)
    pairs = [(r["shard"], r["pos"]) for r in run.decisions.to_pylist()]
    assert {s.key for s in run.read_samples(pairs).values()} == {"other_picture", "plain_a"}
    grid = Gallery(run).grid(run.dropped_by("blocklist_pdq").to_pylist())
    assert "<img" not in grid and "secret caption" not in grid and "withheld" in grid

    assert main(["inspect", str(result.out), "--sample", "sha_hit"]) == 0
    printed = capsys.readouterr().out
    assert "blocklisted:bad-sha256.txt" in printed and "caption_words" not in printed and "md5:" not in printed


def test_low_quality_pdq_never_matches():
    flat = "0" * 64
    index = BlocklistIndex("pdq", [flat], 31)
    assert index.matches({"pdq": flat, "pdq_quality": 50})
    assert not index.matches({"pdq": flat, "pdq_quality": 49})


def test_phash_lists_match_within_the_distance():
    index = BlocklistIndex("phash", ["00000000000000ff"], 2)
    assert index.matches({"phash": 0xFC}) and not index.matches({"phash": 0xF0})


@pytest.mark.parametrize(
    "annotate, step, message",
    [
        ("sha256", {"blocklist": "sha256", "list": "missing.txt"}, "cannot read"),
        ("md5", {"blocklist": "md5", "list": "bad.txt"}, "bad.txt:2: 'abc' is not a md5 digest (32 hex digits)"),
        ("sha256", {"blocklist": "sha256", "list": "sha.txt", "max_distance": 3}, "match exactly"),
        ("sha256", {"blocklist": "pdq", "list": "pdq.txt"}, "column 'pdq' is not produced by an earlier step; add `- annotate: pdq`"),
        ("sha256", {"blocklist": "crc", "list": "sha.txt"}, "unknown hash 'crc'"),
        ("pdq", {"blocklist": "pdq", "list": "pdq.txt", "max_distance": 256}, "0 to 255"),
    ],
)
def test_bad_blocklist_steps_are_refused_at_load(tmp_path, annotate, step, message):
    (tmp_path / "bad.txt").write_text("# comment\nabc\n")
    (tmp_path / "sha.txt").write_text("a" * 64 + "\n")
    (tmp_path / "pdq.txt").write_text("f" * 64 + "\n")
    step = {**step, "list": str(tmp_path / step["list"])}
    with pytest.raises(RecipeError) as err:
        mmcurate.Recipe.from_dict({"name": "r", "steps": [{"annotate": annotate}, step]})
    assert message in str(err.value) and "step 2 (blocklist_" in str(err.value)


def test_a_recipe_with_a_blocklist_round_trips_through_yaml(planted, tmp_path):
    _, _, lists, recipe = planted
    loaded = mmcurate.Recipe.from_dict(recipe)
    path = tmp_path / "recipe.yaml"
    path.write_text(loaded.to_yaml())
    assert mmcurate.Recipe.load(str(path)).steps == loaded.steps
    assert loaded.step("blocklist_pdq").max_distance == 31 and loaded.step("blocklist_md5").to_dict()["list"] == str(lists["md5"])
