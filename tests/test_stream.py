"""``mmcurate.select``: curating a webdataset stream inside a training loop (PyTorch DataLoader workers).

Also run by ``.ci/compat`` beside open_clip's training extra (webdataset 0.2.86), so it uses only
what both webdataset lines offer (``compose``, ``decode``, ``to_tuple``).
"""

from __future__ import annotations

import io
import shutil

import pytest
import torch
import webdataset as wds
from PIL import Image

import mmcurate
from conftest import DEMO_SHARDS
from mmcurate.views.stream import ShardChanged, UnknownSample

URLS = [str(p) for p in DEMO_SHARDS]


@pytest.fixture(scope="module")
def demo(demo_default):
    return demo_default, mmcurate.open_run(demo_default.out).decisions.to_pylist()


def _loader_keys(dataset, workers: int = 2) -> list[str]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    return [sample["__key__"] for sample in loader]


def test_run_stage_under_two_dataloader_workers_keeps_exactly_the_runs_kept_keys(demo):
    result, decisions = demo
    dataset = wds.WebDataset(URLS, shardshuffle=False).compose(mmcurate.select(run=result.out))
    keys = _loader_keys(dataset)
    assert len(keys) == len(set(keys)) == result.kept == 174
    assert set(keys) == {d["key"] for d in decisions if d["kept"]}


def test_recipe_stage_applies_per_sample_steps_and_says_it_skips_dedup(demo):
    _, decisions = demo
    with pytest.warns(UserWarning, match="dedup_exact skipped"):
        stage = mmcurate.select(recipe="default")
    assert stage.skipped == ["dedup_exact"]
    keys = _loader_keys(wds.WebDataset(URLS, shardshuffle=False).compose(stage))
    # what the run kept plus the exact duplicates only the global step removes
    assert sorted(keys) == sorted(d["key"] for d in decisions if d["kept"] or d["step"] == "dedup_exact")


@pytest.mark.filterwarnings("ignore:.*global step")
def test_recipe_stage_takes_overrides_like_the_cli():
    stage = mmcurate.select(recipe=mmcurate.Recipe.load("default"), overrides=["image_size.expr=width >= 300"])
    samples = list(stage(wds.WebDataset(URLS[:1], shardshuffle=False)))
    assert samples and all(s["__key__"].startswith("000000") for s in samples)
    assert all(Image.open(io.BytesIO(s["jpg"])).width >= 300 for s in samples if "jpg" in s)


def test_a_sample_the_run_never_saw_is_an_error_unless_asked_otherwise(demo, tmp_path):
    from conftest import make_shard, simple_samples

    result, _ = demo
    other = str(make_shard(tmp_path / "other.tar", simple_samples("new", 2)))
    with pytest.raises(UnknownSample, match="sample 'new00000' from .*other.tar is not in run"):
        list(mmcurate.select(run=result.out)(wds.WebDataset(other, shardshuffle=False)))
    assert list(mmcurate.select(run=result.out, unknown="drop")(wds.WebDataset(other, shardshuffle=False))) == []
    assert len(list(mmcurate.select(run=result.out, unknown="keep")(wds.WebDataset(other, shardshuffle=False)))) == 2


@pytest.mark.filterwarnings("ignore:.*global step")
def test_recipe_stage_needs_raw_bytes_and_one_mode():
    decoded = wds.WebDataset(URLS[:1], shardshuffle=False).decode("pil")
    with pytest.raises(TypeError, match="before .decode"):
        list(mmcurate.select(recipe="default", batch_size=4)(decoded))
    with pytest.raises(TypeError, match="exactly one of run= .* or recipe="):
        mmcurate.select()


def test_curated_output_reads_with_plain_webdataset_and_decodes(demo):
    result, decisions = demo
    pattern = str(result.out / "shards" / "curated-{000000..000000}.tar")
    samples = list(wds.WebDataset(pattern, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg;png;webp", "txt", "mmcurate.json"))
    assert [k for k, *_ in samples] == [d["key"] for d in decisions if d["kept"]]
    key, image, caption, note = samples[0]
    assert image.size[0] >= 64 and isinstance(caption, str) and note["source"]["key"] == key


def test_run_stage_needs_only_the_decisions_and_names_a_missing_run(demo, tmp_path):
    result, _ = demo
    bare = tmp_path / "decisions-only"
    shutil.copytree(result.out / "decisions.parquet", bare / "decisions.parquet")  # no run.json, no recipe
    assert len(list(mmcurate.select(run=bare)(wds.WebDataset(URLS, shardshuffle=False)))) == 174
    with pytest.raises(FileNotFoundError, match="no decisions.parquet; not a finished mmcurate run"):
        mmcurate.select(run=tmp_path / "nothing")


@pytest.mark.filterwarnings("ignore:.*global step")
def test_recipe_stage_decodes_video_in_a_dataloader_worker_like_a_run(tmp_path, client):
    from conftest import REPO

    shard = str(REPO / "shards" / "video-000000.tar")
    run = mmcurate.curate(shard, "video-default", tmp_path / "video", client=client, quiet=True)
    decisions = mmcurate.open_run(run.out).decisions.to_pylist()
    stage = mmcurate.select(recipe="video-default")
    assert stage.skipped == ["dedup_exact", "dedup_video_phash"]
    keys = _loader_keys(wds.WebDataset(shard, shardshuffle=False).compose(stage), workers=1)
    assert sorted(keys) == sorted(d["key"] for d in decisions if d["kept"] or d["step"] in stage.skipped)


def test_run_stage_matches_shards_by_identity_not_file_name(tmp_path, client):
    from conftest import make_shard, simple_samples

    recipe = mmcurate.Recipe.from_dict({
        "name": "identity",
        "modalities": {"image": ["jpg"], "text": ["txt"]},
        "steps": [{"annotate": "caption_info"}, {"id": "long", "filter": "caption_chars >= 17"}],  # keeps numbers 10, 11
    })
    shards = [make_shard(tmp_path / "in" / f"{i:06d}.tar", simple_samples(f"s{i}-", 12, seed=i)) for i in range(2)]
    result = mmcurate.curate([str(s) for s in shards], recipe, tmp_path / "run", client=client, quiet=True)
    stage = mmcurate.select(run=result.out)

    # the same shard elsewhere under another name, its size and time kept (cp -p, mv): its decisions apply
    moved = tmp_path / "elsewhere" / "renamed.tar"
    moved.parent.mkdir()
    shutil.copy2(shards[0], moved)
    assert [s["__key__"] for s in stage(wds.WebDataset(str(moved), shardshuffle=False))] == ["s0-00010", "s0-00011"]

    # another shard with an input's file name, and an input rewritten in place: not the shards the run decided
    other = make_shard(tmp_path / "other" / "000001.tar", simple_samples("s1-", 13, seed=7))
    make_shard(shards[1], simple_samples("s1-", 12, seed=8))
    for changed in (other, shards[1]):
        with pytest.raises(ShardChanged, match=rf"{changed}: not the shard run .*run decided as .*in/000001.tar: its identity \(size\|stamps\) was '\d+\|.+', now '\d+\|.+'"):
            list(stage(wds.WebDataset(str(changed), shardshuffle=False)))
    assert list(mmcurate.select(run=result.out, unknown="drop")(wds.WebDataset(str(other), shardshuffle=False))) == []
    # match="name" trusts the file name (the caller vouches for the content)
    trusted = mmcurate.select(run=result.out, match="name", unknown="drop")(wds.WebDataset(str(other), shardshuffle=False))
    assert [s["__key__"] for s in trusted] == ["s1-00010", "s1-00011"]
