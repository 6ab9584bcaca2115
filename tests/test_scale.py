"""Web scale: the driver holds per-shard state only; decisions are a dataset read per shard."""

from __future__ import annotations

import pickle
import shutil

import pyarrow.parquet as pq
import pytest
import webdataset as wds

import mmcurate
from conftest import make_shard, simple_samples
from mmcurate.engine import cluster
from mmcurate.engine.global_steps import GLOBAL_RUNNERS

RECIPE = {
    "name": "scale",
    "modalities": {"image": ["jpg"], "text": ["txt"]},
    "steps": [
        {"annotate": "image_info"},
        {"annotate": "caption_info"},
        {"id": "long", "filter": "caption_chars >= 17"},
    ],
    "output": {"samples_per_shard": 7},
}


def test_what_tasks_send_the_driver_does_not_grow_with_the_samples_per_shard(tmp_path, client, monkeypatch):
    """Group, write and decisions tasks return counts per shard: 40 times the samples per shard
    leaves what reaches the driver at the same size (entries or drops per sample would not)."""
    returned: dict[str, int] = {}
    real = cluster.map_tasks

    def measured(client, fn, items, label, *args, **kwargs):
        results = real(client, fn, items, label, *args, **kwargs)
        returned[label.split(":")[0]] = len(pickle.dumps(results))
        return results

    monkeypatch.setattr(cluster, "map_tasks", measured)
    recipe = mmcurate.Recipe.from_dict(RECIPE)
    sizes = {}
    for n in (5, 200):
        shards = [str(make_shard(tmp_path / f"in{n}" / f"{i:06d}.tar", simple_samples(f"s{i}-", n, seed=i))) for i in range(3)]
        returned.clear()
        result = mmcurate.curate(shards, recipe, tmp_path / f"run{n}", client=client, quiet=True)
        assert result.samples_in == 3 * n and result.kept == 3 * (n - min(n, 10))  # "a photo number 0".."9" are short
        sizes[n] = dict(returned)
    for label in ("stage 1/1", "decisions"):
        assert sizes[200][label] <= sizes[5][label] * 1.1 + 64, (label, sizes)


def test_global_steps_send_the_driver_summaries_whose_size_does_not_grow_with_the_drops(tmp_path, client, monkeypatch):
    """keep_top and dedup record their drops on the workers: what a runner returns to the driver
    (per-shard summaries and a small report) is the same size at 40 times the dropped samples."""
    returned: dict[str, int] = {}
    for kind, runner in list(GLOBAL_RUNNERS.items()):
        def measured(client, store, plan, *args, runner=runner):
            result = runner(client, store, plan, *args)
            returned[plan.id] = len(pickle.dumps(result))
            return result

        monkeypatch.setitem(GLOBAL_RUNNERS, kind, measured)
    recipe = mmcurate.Recipe.from_dict({
        "name": "global-scale",
        "modalities": {"image": ["jpg"], "text": ["txt"]},
        "steps": [
            {"annotate": "image_info"},
            {"annotate": "caption_info"},
            {"id": "top", "keep_top": "image_bytes", "fraction": 0.5},  # sizes vary: drops in every shard
            {"id": "same_format", "dedup": "exact", "column": "format"},  # every image is a JPEG
        ],
    })
    sizes, dropped = {}, {}
    for n in (5, 200):
        shards = [str(make_shard(tmp_path / f"in{n}" / f"{i:06d}.tar", simple_samples(f"s{i}-", n, seed=i))) for i in range(3)]
        returned.clear()
        result = mmcurate.curate(shards, recipe, tmp_path / f"run{n}", client=client, quiet=True)
        assert result.kept == 1 and result.top[0].kept == round(0.5 * 3 * n)
        sizes[n], dropped[n] = dict(returned), result.dropped
        run = mmcurate.open_run(result.out)
        assert run.dropped_by("same_format").num_rows == result.dedup[0].removed == result.top[0].kept - 1
        assert run.dropped_by("top").num_rows == 3 * n - result.top[0].kept
    assert dropped[200] >= 40 * dropped[5]
    for step in ("top", "same_format"):
        assert sizes[200][step] <= sizes[5][step] * 1.1 + 64, (step, sizes)


def test_decisions_are_one_file_per_input_shard_read_per_shard(tmp_path, client):
    shards = [str(make_shard(tmp_path / "in" / f"{i:06d}.tar", simple_samples(f"s{i}-", 12, seed=i))) for i in range(3)]
    result = mmcurate.curate(shards, mmcurate.Recipe.from_dict(RECIPE), tmp_path / "run", client=client, quiet=True)
    files = sorted(p.name for p in result.decisions_path.iterdir())
    assert files == ["00000000-000000.parquet", "00000001-000001.parquet", "00000002-000002.parquet", "_shards.parquet"]
    run = mmcurate.open_run(result.out)
    assert run.shard_decisions(shards[1])["key"].to_pylist() == [f"s1-{i:05d}" for i in range(12)]
    assert pq.read_table(result.decisions_path).num_rows == run.counts()[0] == 36  # readers see one table
    assert run.counts()[1] == result.kept == 6
    assert not (result.out / "state").exists()


def test_unreadable_inputs_are_found_file_by_file_without_reading_the_decisions_whole(tmp_path, client, monkeypatch):
    a = make_shard(tmp_path / "in" / "a.tar", simple_samples("a", 12, seed=1))
    junk = tmp_path / "in" / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 64)
    empty = tmp_path / "in" / "empty.tar"
    empty.write_bytes(b"")
    result = mmcurate.curate([str(a), str(junk), str(empty)], mmcurate.Recipe.from_dict(RECIPE), tmp_path / "run", client=client, quiet=True)
    run = mmcurate.open_run(result.out)
    monkeypatch.setattr(type(run), "decisions", property(lambda self: pytest.fail("the whole decisions table was read")))
    found = run.unreadable_inputs()
    assert sorted(found) == [str(empty), str(junk)]  # a.tar was read
    assert found[str(junk)].startswith(f"read_error: {junk}: not a readable tar")


def test_a_run_with_a_single_decisions_file_still_opens_streams_and_resumes(tmp_path, client):
    """Runs written before decisions became a dataset hold one decisions.parquet file."""
    shards = [str(make_shard(tmp_path / "in" / f"{i:06d}.tar", simple_samples(f"s{i}-", 12, seed=i))) for i in range(2)]
    recipe = mmcurate.Recipe.from_dict(RECIPE)
    first = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True)
    table = pq.read_table(first.decisions_path)
    shutil.rmtree(first.decisions_path)
    pq.write_table(table, first.decisions_path)
    run = mmcurate.open_run(first.out)
    assert run.counts() == (24, 4) and run.shard_decisions(shards[1]).equals(table.slice(12))
    streamed = list(mmcurate.select(run=first.out)(wds.WebDataset(shards, shardshuffle=False)))
    assert [s["__key__"] for s in streamed] == ["s0-00010", "s0-00011", "s1-00010", "s1-00011"]
    again = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True)
    assert again.decisions_path.is_dir() and pq.read_table(again.decisions_path).equals(table)


def test_output_keys_repeated_across_many_shards_keep_the_first_shards_sample(tmp_path, client):
    """Cross-shard key uniqueness runs as a shuffle over partitions of shards; the result is
    what one pass in input order gives."""
    shards = []
    for i in range(20):
        (shared, data), (_, other) = simple_samples("x", 2, seed=i)
        shards.append(str(make_shard(tmp_path / "in" / f"{i:06d}.tar", [(f"k{i % 5}", data), (f"u{i}", other)])))
    recipe = {**RECIPE, "steps": [{"annotate": "image_info"}]}
    result = mmcurate.curate(shards, mmcurate.Recipe.from_dict(recipe), tmp_path / "run", client=client, quiet=True)
    dropped = mmcurate.open_run(result.out).dropped_by("output").to_pylist()
    assert [(d["shard"], d["key"], d["reason"]) for d in dropped] == [
        (shards[i], f"k{i % 5}", f"duplicate_key_across_shards:{shards[i % 5]}") for i in range(5, 20)
    ]
    assert result.kept == 25 and len(result.shards) == 4  # 7 per output shard
