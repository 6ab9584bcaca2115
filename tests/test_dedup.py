"""Global dedup steps through the real engine: near-duplicates, keep policies, --against, semantic.

Hashes and embeddings are planted per sample (a small annotator reads them from the
sample's JSON member), so distances are known exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate import annotators
from mmcurate.annotators import Annotator


class Planted(Annotator):
    """Reads ``phash``, ``phash_mirror``, ``quality`` and ``emb`` from ``KEY.json``."""

    name = "planted"
    columns = {
        "phash": pa.uint64(),
        "phash_mirror": pa.uint64(),
        "quality": pa.float64(),
        "emb": pa.list_(pa.float16(), 4),
    }

    def annotate_one(self, sample):
        meta = json.loads(sample.sample.get("json"))
        return {c: meta.get(c) for c in self.columns}


@pytest.fixture(autouse=True)
def _register():
    import cloudpickle
    import test_dedup

    cloudpickle.register_pickle_by_value(test_dedup)
    annotators.register(Planted)


def _flip(h: int, bits: list[int]) -> int:
    for b in bits:
        h ^= 1 << b
    return h


def _sample(key, phash, w=64, h=64, quality=0.0, emb=(1, 0, 0, 0), mirror=None, seed=0):
    meta = {"phash": phash, "phash_mirror": mirror if mirror is not None else phash, "quality": quality, "emb": list(emb)}
    return key, {"jpg": image_bytes(w, h, seed=seed), "txt": b"a caption", "json": json.dumps(meta).encode()}


def _recipe(dedup: dict, extra_steps=()):
    steps = [{"annotate": "image_info"}, {"annotate": "planted"}, *extra_steps, {"dedup": dedup.pop("method"), **dedup}]
    return mmcurate.Recipe.from_dict({"name": "dedup-test", "steps": steps})


def _decisions(result):
    return {d["key"]: d for d in mmcurate.open_run(result.out).decisions.to_pylist()}


def test_near_duplicates_across_shards_are_found_at_exactly_max_distance(tmp_path, client):
    base = 0x0123456789ABCDEF
    far = 0xFEDCBA9876543210
    a = [_sample("a0", base, seed=1), _sample("a1", far, seed=2)]
    b = [
        _sample("b0", _flip(base, [0, 9, 20, 63]), seed=3),  # distance 4 from a0: duplicate
        _sample("b1", _flip(base, [1, 2, 3, 4, 5]), seed=4),  # distance 5 from a0, 6 from b0? no: separate
        _sample("b2", _flip(far, [7]), seed=5),  # distance 1 from a1
    ]
    shards = [str(make_shard(tmp_path / "000000.tar", a)), str(make_shard(tmp_path / "000001.tar", b))]
    result = mmcurate.curate(shards, _recipe({"method": "phash", "max_distance": 4}), tmp_path / "run", client=client, quiet=True)
    d = _decisions(result)
    assert d["b0"]["reason"] == "near_duplicate_of:a0"
    assert d["b2"]["reason"] == "near_duplicate_of:a1"
    assert d["b1"]["kept"] and d["a0"]["kept"] and d["a1"]["kept"]
    assert result.samples_in == result.kept + result.dropped == 5
    notes = {r["key"]: r for r in mmcurate.open_run(result.out).annotations().to_pylist()}
    assert notes["b0"]["dup_cluster_size"] == 2 and notes["b0"]["dup_cluster"] == notes["a0"]["dup_cluster"]
    assert notes["b1"]["dup_cluster_size"] == 1


def test_clusters_are_transitive_and_the_keep_policy_picks_the_survivor(tmp_path, client):
    h = 0x00FF00FF00FF00FF
    chain = [
        _sample("c0", h, w=64, h=64, quality=0.2, seed=1),
        _sample("c1", _flip(h, [0, 1, 2]), w=200, h=100, quality=0.9, seed=2),
        _sample("c2", _flip(h, [0, 1, 2, 30, 31, 32]), w=100, h=100, quality=0.5, seed=3),  # 6 from c0, 3 from c1
    ]
    shard = str(make_shard(tmp_path / "000000.tar", chain))
    expected = {"first": "c0", "highest quality": "c1", "lowest quality": "c0", "largest resolution": "c1"}
    for keep, survivor in expected.items():
        result = mmcurate.curate(
            shard, _recipe({"method": "phash", "max_distance": 3, "keep": keep}), tmp_path / keep.replace(" ", "_"), client=client, quiet=True
        )
        d = _decisions(result)
        assert [k for k, v in d.items() if v["kept"]] == [survivor], keep
        assert {v["reason"] for k, v in d.items() if not v["kept"]} == {f"near_duplicate_of:{survivor}"}


def test_mirrored_copies_match_through_the_mirror_hash(tmp_path, client):
    h, m = 0x1111222233334444, 0x8888444422221111
    samples = [_sample("orig", h, mirror=m, seed=1), _sample("flipped", m, mirror=h, seed=2)]
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    plain = mmcurate.curate(shard, _recipe({"method": "phash", "max_distance": 2}), tmp_path / "plain", client=client, quiet=True)
    assert plain.kept == 2
    mirrored = mmcurate.curate(shard, _recipe({"method": "phash", "max_distance": 2, "mirror": True}), tmp_path / "mirror", client=client, quiet=True)
    assert _decisions(mirrored)["flipped"]["reason"] == "near_duplicate_of:orig"


def test_against_a_previous_run_drops_new_duplicates_without_rehashing_old_data(tmp_path, client):
    h1, h2 = 0xAAAA0000AAAA0000, 0x5555FFFF5555FFFF
    old = str(make_shard(tmp_path / "old.tar", [_sample("old0", h1, seed=1), _sample("old1", h2, seed=2)]))
    new = str(make_shard(tmp_path / "new.tar", [_sample("new0", _flip(h1, [3]), seed=3), _sample("new1", 0x0F0F, seed=4)]))
    recipe = _recipe({"method": "phash", "max_distance": 2})
    mmcurate.curate(old, recipe, tmp_path / "first", client=client, quiet=True)
    (tmp_path / "old.tar").unlink()  # the old data is gone: only the first run's stored columns can answer
    second = mmcurate.curate(new, recipe, tmp_path / "second", client=client, quiet=True, against=[tmp_path / "first"])
    assert second.computed["planted"] == 2  # only the new shard's samples were annotated
    d = _decisions(second)
    assert d["new0"]["reason"] == "matches_reference:old0"
    assert d["new1"]["kept"]
    assert set(d) == {"new0", "new1"}  # the old run's samples are not re-decided here


def test_semantic_dedup_drops_near_identical_embeddings_within_eps(tmp_path, client):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 4))
    samples = []
    for i, c in enumerate(centers):
        samples.append(_sample(f"s{i}", i, emb=c, seed=10 + i))
        samples.append(_sample(f"s{i}dup", 100 + i, emb=c + rng.normal(scale=1e-3, size=4), seed=20 + i))
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    recipe = _recipe({"method": "semantic", "column": "emb", "eps": 0.01, "clusters": 3})
    result = mmcurate.curate(shard, recipe, tmp_path / "run", client=client, quiet=True)
    d = _decisions(result)
    assert {k for k, v in d.items() if not v["kept"]} == {f"s{i}dup" for i in range(6)}
    assert all(d[f"s{i}dup"]["reason"] == f"semantic_duplicate_of:s{i}" for i in range(6))
    (report,) = result.dedup
    assert report.stats["clusters"] == 3
    removed = report.stats["removed_by_eps"]
    assert removed["0.01"] == 6 and removed["0.2"] >= removed["0.05"] >= removed["0.01"]


def test_dedup_config_errors_name_the_step_and_field():
    with pytest.raises(mmcurate.RecipeError, match="field 'keep'"):
        _recipe({"method": "phash", "keep": "biggest"})
    with pytest.raises(mmcurate.RecipeError, match="column 'nope'"):
        _recipe({"method": "phash", "keep": "highest nope"})
    with pytest.raises(mmcurate.RecipeError, match="unknown field"):
        _recipe({"method": "exact", "column": "phash", "max_distance": 3})
