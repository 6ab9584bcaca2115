"""CLIP weights are named by content: a rewritten weights file (same size, same mtime) gets
fresh rows, an unchanged one reuses them, an ``hf-hub:`` model is pinned to the commit of its
cached snapshot. Tiny random-weight open_clip models (see ``test_clip.py``); nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import mmcurate
from conftest import make_shard
from mmcurate.engine import cluster as engine
from mmcurate.io.filehash import cache_path, sha256_file
from test_clip import TINY, TINY_NAME, TinyClip, _annotations, _recipe, _reference_scores, _samples, tiny_clip  # noqa: F401 (fixture)


def _tiny_weights(seed: int, folder: Path) -> Path:
    """Random weights of the tiny architecture (registered by the ``tiny_clip`` fixture), in
    ``folder/SEED/weights.pt`` (torch names the archive after the file: one name, one size)."""
    import open_clip

    torch.manual_seed(seed)
    path = folder / str(seed) / "weights.pt"
    path.parent.mkdir(parents=True)
    torch.save(open_clip.create_model(TINY_NAME).state_dict(), path)
    return path


def _rewrite_keeping_size_and_mtime(path: Path, new_bytes: bytes) -> None:
    """Replace the file's bytes in place, then set its modification time back."""
    before = path.stat()
    assert len(new_bytes) == before.st_size
    path.write_bytes(new_bytes)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_file_is_hashed_once_per_version(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    real = hashlib.sha256(b"a" * 1000).hexdigest()
    assert sha256_file(path) == real
    entries = json.loads(cache_path().read_text())
    assert entries[str(path.resolve())]["sha256"] == real

    # An unchanged file is not read again: the cached value is what comes back.
    entries[str(path.resolve())]["sha256"] = "0" * 64
    cache_path().write_text(json.dumps(entries))
    assert sha256_file(path) == "0" * 64

    # Rewritten with the same size and modification time: hashed again.
    _rewrite_keeping_size_and_mtime(path, b"b" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert json.loads(cache_path().read_text())[str(path.resolve())]["sha256"] == hashlib.sha256(b"b" * 1000).hexdigest()

    cache_path().write_text("{not json")  # a damaged cache costs a rehash, never an error
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()


def _local_dir(folder: Path, weights: Path) -> str:
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    shutil.copy(weights, folder / "open_clip_pytorch_model.bin")
    return f"local-dir:{folder}"


@pytest.mark.parametrize("source", ["checkpoint", "local-dir"])
def test_rewritten_weights_compute_fresh_rows_and_unchanged_ones_reuse_them(tmp_path, client, tiny_clip, source):
    samples = _samples(3)
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    first, second = _tiny_weights(0, tmp_path), _tiny_weights(1, tmp_path)
    if source == "checkpoint":
        weights = tmp_path / "weights.pt"
        shutil.copy(first, weights)
        step = {"annotate": "clip_score", "model": TINY_NAME, "model_config": tiny_clip.config, "checkpoint": str(weights), "device": "cpu"}
    else:
        model = _local_dir(tmp_path / "model", first)
        weights = tmp_path / "model" / "open_clip_pytorch_model.bin"
        step = {"annotate": "clip_score", "model": model, "device": "cpu"}
    out = tmp_path / "run"

    def run():
        return mmcurate.curate(shard, _recipe(step), out, client=client, quiet=True, overwrite=True)

    before = run()
    assert before.computed == {"clip_score": 3}
    assert run().computed == {"clip_score": 0}  # unchanged weights: every row reused

    _rewrite_keeping_size_and_mtime(weights, second.read_bytes())
    after = run()
    assert after.computed == {"clip_score": 3}
    reference = _reference_scores(TinyClip(tiny_clip.config, str(second)), samples)
    rows = _annotations(after)
    for key, (score, _, _) in reference.items():
        assert rows[key]["clip_score"] == pytest.approx(score, abs=1e-4)
    resolved = json.loads((out / "run.json").read_text())["resolved"]["clip_score"]
    assert hashlib.sha256(second.read_bytes()).hexdigest() in json.dumps(resolved)


def _hub_snapshot(hub: Path, repo: str, commit: str, weights: Path) -> None:
    """A Hugging Face cache entry for ``repo`` at ``commit`` (what a download leaves), made ``main``."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    shutil.copy(weights, snapshot / "open_clip_pytorch_model.bin")
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def test_hf_hub_models_are_pinned_to_the_cached_snapshot(tmp_path, monkeypatch, tiny_clip):
    """The commit of the cached snapshot is the fingerprint and is what workers load; a new
    snapshot (the hub moved on) computes fresh rows with its own weights."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))  # the driver's
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))  # the workers', started below
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    samples = _samples(3)
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    step = {"annotate": "clip_score", "model": "hf-hub:test/tiny-clip", "device": "cpu"}
    commits = ["a" * 40, "b" * 40]
    out = tmp_path / "run"
    with engine.connect(workers=1, quiet=True) as c:
        for seed, commit in enumerate(commits):
            weights = _tiny_weights(seed, tmp_path)
            _hub_snapshot(hub, "test/tiny-clip", commit, weights)
            result = mmcurate.curate(shard, _recipe(step), out, client=c, quiet=True, overwrite=True)
            assert result.computed == {"clip_score": 3}
            assert json.loads((out / "run.json").read_text())["resolved"]["clip_score"] == {"hf_revision": commit}
            reference = _reference_scores(TinyClip(tiny_clip.config, str(weights)), samples)
            rows = _annotations(result)
            for key, (score, _, _) in reference.items():
                assert rows[key]["clip_score"] == pytest.approx(score, abs=1e-4), commit
        assert mmcurate.curate(shard, _recipe(step), out, client=c, quiet=True, overwrite=True).computed == {"clip_score": 0}


def test_precision_and_device_are_in_the_fingerprint_and_batch_size_is_not(tmp_path, client, tiny_clip):
    shard = str(make_shard(tmp_path / "000000.tar", _samples(3)))
    recipe = _recipe({"annotate": "clip_score", **tiny_clip.fields, "batch_size": 4})
    out = tmp_path / "run"

    def computed(*overrides: str) -> int:
        return mmcurate.curate(shard, recipe, out, client=client, quiet=True, overwrite=True, overrides=overrides).computed["clip_score"]

    assert computed() == 3
    assert computed("clip_score.batch_size=1") == 0  # same scores, however batched
    assert computed("clip_score.device=auto") == 3  # this machine may run it elsewhere, in fp16
    assert computed("clip_score.device=auto", "clip_score.precision=fp32") == 3
    assert computed("clip_score.device=auto", "clip_score.precision=fp32", "clip_score.batch_size=2") == 0
