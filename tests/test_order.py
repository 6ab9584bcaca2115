"""``output.order``: the curated set written in input order, shuffled (one global permutation),
or sorted by a stored column, across all output shards; the same bytes on every rerun and
worker count; a new order re-writes without computing any annotation."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate.io.tarread import iter_samples

WIDTHS = [[40, 72, 56, 40, 88, 64, 48], [72, 96, 40, 80, 56], [64, 48, 104, 40, 72, 88]]


def _shards(tmp_path):
    paths, samples = [], {}
    for s, widths in enumerate(WIDTHS):
        items = [(f"s{s}k{i}", {"jpg": image_bytes(w, 32, seed=10 * s + i), "txt": f"caption {s} {i}".encode()}) for i, w in enumerate(widths)]
        paths.append(str(make_shard(tmp_path / f"in-{s}.tar", items)))
        samples.update(items)
    return paths, samples


def _recipe(order: str, seed: int = 0) -> mmcurate.Recipe:
    return mmcurate.Recipe.from_dict({
        "name": "order",
        "steps": [{"annotate": "image_info"}],
        "output": {"samples_per_shard": 4, "order": order, "seed": seed},
    })


def _written(result) -> list[tuple[str, str, dict[str, bytes]]]:
    """(output shard, key, members less the annotations member) of every written sample, in order."""
    index = json.loads((result.out / "shards" / "index.json").read_text())
    found = []
    for entry in index["shardlist"]:
        for sample in iter_samples(str(result.out / "shards" / entry["url"])):
            found.append((entry["url"], sample.key, {m.ext: m.data for m in sample.members if m.ext != "mmcurate.json"}))
    return found


def _check(result, samples, expected_keys):
    written = _written(result)
    assert [k for _, k, _ in written] == expected_keys
    assert all(members == samples[k] for _, k, members in written)  # byte for byte
    decided = {d["key"]: d["output_shard"] for d in pq.read_table(result.decisions_path).to_pylist()}
    assert decided == {k: shard for shard, k, _ in written}
    assert not (result.out / "order").exists()
    return written


def test_sorted_by_a_column_both_ways_ties_in_input_order(tmp_path, client):
    paths, samples = _shards(tmp_path)
    keys = list(samples)
    width = {f"s{s}k{i}": w for s, widths in enumerate(WIDTHS) for i, w in enumerate(widths)}
    asc = mmcurate.curate(paths, _recipe("width asc"), tmp_path / "asc", client=client, quiet=True)
    _check(asc, samples, sorted(keys, key=lambda k: width[k]))  # sorted() is stable: ties keep input order
    desc = mmcurate.curate(paths, _recipe("width desc"), tmp_path / "desc", client=client, quiet=True)
    written = _check(desc, samples, sorted(keys, key=lambda k: -width[k]))
    assert [len([w for w in written if w[0] == name]) for name in dict.fromkeys(w[0] for w in written)] == [4, 4, 4, 4, 2]
    again = mmcurate.curate(paths, _recipe("input"), tmp_path / "desc", client=client, quiet=True, overwrite=True)
    assert again.computed == {"image_info": 0}  # a new order re-writes from the stored columns
    _check(again, samples, keys)


def test_shuffle_is_one_global_permutation_the_same_on_every_rerun_and_worker_count(tmp_path, client):
    paths, samples = _shards(tmp_path)
    keys = list(samples)
    first = mmcurate.curate(paths, _recipe("shuffle", seed=1), tmp_path / "a", client=client, quiet=True)
    order = [k for _, k, _ in _written(first)]
    assert sorted(order) == sorted(keys) and order != keys
    _check(first, samples, order)
    shards_of = [{k[:2] for s, k, _ in _written(first) if s == name} for name in dict.fromkeys(s for s, _, _ in _written(first))]
    assert any(len(s) > 1 for s in shards_of)  # output shards mix input shards: not a per-shard shuffle
    other = mmcurate.curate(paths, _recipe("shuffle", seed=1), tmp_path / "b", workers=1, quiet=True)
    assert other.computed == {"image_info": len(keys)}
    for name in ("curated-000000.tar", "curated-000004.tar"):  # the same bytes, with another worker count
        assert (first.out / "shards" / name).read_bytes() == (other.out / "shards" / name).read_bytes()
    reseeded = mmcurate.curate(paths, _recipe("shuffle", seed=2), tmp_path / "a", client=client, quiet=True, overwrite=True)
    assert reseeded.computed == {"image_info": 0}
    assert [k for _, k, _ in _check(reseeded, samples, [k for _, k, _ in _written(reseeded)])] != order
    assert sorted(k for _, k, _ in _written(reseeded)) == sorted(keys)


def test_an_order_column_must_be_a_stored_scalar_column():
    with pytest.raises(mmcurate.RecipeError, match="column 'clip_score' is not a number"):
        _recipe("clip_score desc")
    with pytest.raises(mmcurate.RecipeError, match="expected input, shuffle, or COLUMN asc|desc"):
        _recipe("width upwards")
    assert _recipe("width desc").output.sort == ("width", True)
