"""Sample keys are data: repeated keys inside a shard resume exactly, and output keys are unique."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard, simple_samples
from mmcurate.recipe import Recipe, RecipeError
from mmcurate.io.tarread import iter_samples


def _output_bytes(out):
    files = sorted((out / "shards").glob("*")) + sorted((out / "decisions.parquet").glob("*"))  # decisions: a dataset
    return {p.name: p.read_bytes() for p in files}


def _output_keys(out) -> list[str]:
    return [s.key for path in sorted((out / "shards").glob("*.tar")) for s in iter_samples(str(path))]


def _repeating_shard(tmp_path):
    """Key ``a`` at positions 0 and 5 (not consecutive), images of growing width."""
    keys = ["a", "b", "c", "d", "e", "a", "f"]
    widths = [200, 40, 60, 80, 100, 140, 160]
    samples = [(k, {"jpg": image_bytes(w, 100, seed=i), "txt": f"caption number {i}".encode()}) for i, (k, w) in enumerate(zip(keys, widths))]
    return str(make_shard(tmp_path / "src" / "000000.tar", samples))


def test_a_key_repeated_later_in_a_shard_resumes_to_the_same_result(tmp_path, client):
    shard = _repeating_shard(tmp_path)
    first = mmcurate.curate(shard, "default", tmp_path / "run", client=client, quiet=True)
    assert first.samples_in == 7
    decisions = pq.read_table(tmp_path / "run" / "decisions.parquet").to_pylist()
    assert [d["key"] for d in decisions] == ["a", "b", "c", "d", "e", "a", "f"]
    assert decisions[5]["reason"].startswith("duplicate_key")
    before = _output_bytes(tmp_path / "run")

    again = mmcurate.curate(shard, "default", tmp_path / "run", client=client, quiet=True)
    assert again.computed == {"image_info": 0, "caption_info": 0, "sha256": 0}
    assert _output_bytes(tmp_path / "run") == before

    stricter = ["image_size.expr=width >= 100 and height >= 64"]
    fresh = tmp_path / "fresh"
    mmcurate.curate(shard, "default", fresh, client=client, quiet=True, overrides=stricter)
    rerun = mmcurate.curate(shard, "default", tmp_path / "run", client=client, quiet=True, overwrite=True, overrides=stricter)
    assert rerun.computed == {"image_info": 0, "caption_info": 0, "sha256": 0}
    assert _output_bytes(tmp_path / "run") == _output_bytes(fresh)


def test_a_stream_keeps_exactly_what_the_run_kept_when_a_key_repeats(tmp_path, client):
    import webdataset as wds

    shard = _repeating_shard(tmp_path)
    mmcurate.curate(shard, "default", tmp_path / "run", client=client, quiet=True)
    kept = [d["key"] for d in pq.read_table(tmp_path / "run" / "decisions.parquet").to_pylist() if d["kept"]]
    assert kept == ["a", "d", "e", "f"]  # the first a (200 px wide) kept, the second dropped by read
    stream = wds.WebDataset(shard, shardshuffle=False).compose(mmcurate.select(run=tmp_path / "run"))
    assert [s["__key__"] for s in stream] == kept


def _cross_shard(tmp_path):
    """Key ``x00001`` in both shards, with different images (not duplicates by content)."""
    src = tmp_path / "src"
    first = make_shard(src / "000000.tar", simple_samples("x", 3, seed=1))
    second = make_shard(src / "000001.tar", [("x00001", simple_samples("x", 1, seed=2)[0][1]), *simple_samples("y", 2, seed=3)])
    return [str(first), str(second)]


def test_a_key_seen_in_an_earlier_shard_is_dropped_by_default(tmp_path, client):
    shards = _cross_shard(tmp_path)
    out = tmp_path / "run"
    result = mmcurate.curate(shards, "default", out, client=client, quiet=True)
    assert (result.samples_in, result.kept, result.dropped) == (6, 5, 1)
    dropped = [d for d in pq.read_table(out / "decisions.parquet").to_pylist() if not d["kept"]]
    assert [(d["shard"], d["key"], d["step"], d["reason"]) for d in dropped] == [
        (shards[1], "x00001", "output", f"duplicate_key_across_shards:{shards[0]}")
    ]
    assert result.funnel[-1].step == "output" and result.funnel[-1].dropped == 1
    assert result.report is not None and mmcurate.open_run(out).dropped_by("output").column("key").to_pylist() == ["x00001"]
    keys = _output_keys(out)
    assert sorted(keys) == ["x00000", "x00001", "x00002", "y00000", "y00001"]

    again = mmcurate.curate([str(p) for p in sorted((out / "shards").glob("*.tar"))], "default", tmp_path / "again", client=client, quiet=True)
    assert (again.samples_in, again.kept) == (5, 5)  # mmcurate reads its own output back whole


def test_prefix_shard_keeps_both_under_distinct_keys(tmp_path, client):
    shards = _cross_shard(tmp_path)
    out = tmp_path / "run"
    result = mmcurate.curate(shards, "default", out, client=client, quiet=True, overrides=["output.keys=prefix_shard"])
    assert (result.samples_in, result.kept) == (6, 6)
    keys = _output_keys(out)
    assert keys == ["000000/x00000", "000000/x00001", "000000/x00002", "000001/x00001", "000001/y00000", "000001/y00001"]
    again = mmcurate.curate([str(p) for p in sorted((out / "shards").glob("*.tar"))], "default", tmp_path / "again", client=client, quiet=True)
    assert (again.samples_in, again.kept) == (6, 6)


def test_prefix_shard_still_drops_when_two_shards_share_a_name(tmp_path, client):
    shards = [str(make_shard(tmp_path / d / "000000.tar", simple_samples("z", n, seed=n))) for d, n in (("a", 1), ("b", 2))]
    result = mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True, overrides=["output.keys=prefix_shard"])
    assert _output_keys(tmp_path / "run") == ["000000/z00000", "000000/z00001"]
    assert result.kept == 2
    [dropped] = [d for d in result.funnel if d.step == "output"]
    assert dropped.reasons == {"duplicate_key_across_shards": 1}


def test_an_unknown_keys_choice_is_a_recipe_error():
    with pytest.raises(RecipeError, match="keep, prefix_shard"):
        Recipe.load("default", ["output.keys=rename"])


def test_only_shards_whose_key_ranges_meet_are_compared_and_their_repeats_still_drop(tmp_path, client):
    """Sequential keys in disjoint ranges, except 000002, whose range [m00001, y00000] covers
    000003's and repeats 000001's m00001."""
    from mmcurate.engine.keys import _overlapping

    src = tmp_path / "src"
    names = ["a", "m", None, "q", "z"]
    shards = []
    for n, prefix in enumerate(names):
        samples = simple_samples(prefix, 3, seed=n + 1) if prefix else [("m00001", simple_samples("m", 1, seed=9)[0][1]), ("y00000", simple_samples("y", 1, seed=8)[0][1])]
        shards.append(str(make_shard(src / f"{n:06d}.tar", samples)))
    result = mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True)
    assert (result.samples_in, result.kept) == (14, 13)
    dropped = [d for d in pq.read_table(tmp_path / "run" / "decisions.parquet").to_pylist() if not d["kept"]]
    assert [(d["shard"], d["key"], d["reason"]) for d in dropped] == [(shards[2], "m00001", f"duplicate_key_across_shards:{shards[1]}")]

    assert _overlapping([("a0", "a2", 0), ("m0", "m2", 1), ("m1", "y0", 2), ("q0", "q2", 3), ("z0", "z2", 4)]) == [1, 2, 3]
    assert _overlapping([("c", "d", 0), ("a", "b", 1), ("b", "c", 2), ("e", "f", 3)]) == [0, 1, 2]  # touching ends meet
    assert _overlapping([("a", "b", 0), ("c", "d", 1)]) == []
