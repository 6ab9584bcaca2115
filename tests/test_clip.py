"""CLIP annotators through the real engine, with a tiny open_clip architecture and random weights.

The weights are drawn once from a fixed seed and saved as a checkpoint file, so every
worker process loads identical weights; the reference is open_clip itself (its own
create_model_and_transforms, preprocess, tokenizer, encode_image/encode_text).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

import mmcurate
from conftest import REPO, image_bytes, make_shard
from mmcurate import annotators
from mmcurate.engine import cluster as engine
from mmcurate.engine import shard_task
from mmcurate.steps.annotators.clip import ClipScore, ClipScoreConfig
from mmcurate.engine.plan import Group, build_plan
from mmcurate.steps.sampleview import SampleView
from mmcurate.io.tarread import Member, Sample

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_NAME = "mmcurate-tiny-clip"


@dataclass(frozen=True)
class TinyClip:
    config: str
    checkpoint: str

    @property
    def fields(self) -> dict[str, str]:
        """Recipe fields selecting the tiny model, on the CPU: the exact fp32 path on any
        machine (tests of the GPU placement and the CUDA path set ``device`` themselves)."""
        return {"model": TINY_NAME, "model_config": self.config, "checkpoint": self.checkpoint, "device": "cpu"}

    def reference(self):
        """(model, preprocess, tokenizer) straight from open_clip, fp32 on CPU."""
        import open_clip

        open_clip.add_model_config(self.config)
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_NAME, pretrained=self.checkpoint)
        return model.eval(), preprocess, open_clip.get_tokenizer(TINY_NAME)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> TinyClip:
    import open_clip

    folder = tmp_path_factory.mktemp("tiny-clip")
    config = folder / f"{TINY_NAME}.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_NAME)
    checkpoint = folder / "weights.pt"
    torch.save(model.state_dict(), checkpoint)
    return TinyClip(str(config), str(checkpoint))


class CountedClipScore(ClipScore):
    """``clip_score`` that also appends every key it scores to a log file (one per call)."""

    name = "counted_clip_score"

    @dataclass(frozen=True)
    class Config(ClipScoreConfig):
        log: str = ""

    def annotate(self, batch):
        with open(self.config.log, "a") as fh:
            fh.writelines(f"{s.key}\n" for s in batch)
        return super().annotate(batch)


@pytest.fixture(autouse=True)
def _register():
    import cloudpickle
    import test_clip

    cloudpickle.register_pickle_by_value(test_clip)
    annotators.register(CountedClipScore)


def _samples(n: int, prefix: str = "s", seed: int = 0, captions=None):
    out = []
    for i in range(n):
        caption = captions[i] if captions else f"a photo of thing {i} " + "word " * (i % 4)
        out.append((f"{prefix}{i:04d}", {"jpg": image_bytes(40 + i, 36 + 2 * i, seed=seed * 1000 + i), "txt": caption.encode()}))
    return out


def _recipe(*steps, name="clip-test"):
    return mmcurate.Recipe.from_dict({"name": name, "steps": list(steps)})


def _reference_scores(tiny: TinyClip, samples) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    model, preprocess, tokenizer = tiny.reference()
    pixels = torch.stack([preprocess(Image.open(io.BytesIO(m["jpg"]))) for _, m in samples])
    tokens = tokenizer([m["txt"].decode() for _, m in samples])
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    scores = (img * txt).sum(-1)
    return {key: (float(scores[i]), img[i].numpy(), txt[i].numpy()) for i, (key, _) in enumerate(samples)}


def _annotations(result) -> dict[str, dict]:
    return {row["key"]: row for row in mmcurate.open_run(result.out).annotations().to_pylist()}


def _view(key: str, members: dict[str, bytes]) -> SampleView:
    sample = Sample(key, [Member(f"{key}.{ext}", ext, data) for ext, data in members.items()])
    return SampleView(sample, {"image": ("jpg", "png"), "text": ("txt",)})


def test_preprocess_and_tokens_are_open_clips_own(tiny_clip):
    from mmcurate.steps.clip.encoder import load_encoder
    from mmcurate.steps.clip.images import PixelMaker

    config = ClipScoreConfig(**tiny_clip.fields)
    encoder = load_encoder(config)
    _, preprocess, tokenizer = tiny_clip.reference()
    grey = io.BytesIO()
    Image.fromarray(np.arange(50 * 70, dtype=np.uint8).reshape(50, 70) % 251).save(grey, format="PNG")
    views = [_view("a", {"jpg": image_bytes(90, 40, seed=1)}), _view("b", {"png": grey.getvalue()}), _view("c", {"jpg": image_bytes(33, 120, seed=2)})]
    batch = PixelMaker(encoder, gpu_decode=False)(views)
    expected = torch.stack([preprocess(Image.open(io.BytesIO(v.member("image")[1]))) for v in views])
    assert batch.positions == [0, 1, 2] and torch.equal(batch.wait(), expected)

    long_caption = " ".join(f"word{i}" for i in range(60))
    tokens = encoder.tokenizer(["a dog", long_caption])
    assert torch.equal(tokens, tokenizer(["a dog", long_caption]))
    assert tokens.shape == (2, TINY["text_cfg"]["context_length"])  # cut to the context length


def test_scores_equal_open_clip_whatever_batch_size_and_workers(tmp_path, client, tiny_clip):
    samples = _samples(7, "a") + [("long", {"jpg": image_bytes(64, 64, seed=99), "txt": (" ".join(["long"] * 80)).encode()})]
    more = _samples(5, "b", seed=1)
    shards = [str(make_shard(tmp_path / "000000.tar", samples)), str(make_shard(tmp_path / "000001.tar", more))]
    reference = _reference_scores(tiny_clip, samples + more)
    runs = [(2, {"client": client}), (5, {"workers": 1}), (64, {"client": client})]
    for batch_size, engine_args in runs:
        recipe = _recipe({"annotate": "clip_score", **tiny_clip.fields, "batch_size": batch_size, "embeddings": True})
        result = mmcurate.curate(shards, recipe, tmp_path / f"run{batch_size}", quiet=True, **engine_args)
        assert result.computed == {"clip_score": 13}
        rows = _annotations(result)
        assert set(rows) == set(reference)
        for key, (score, img, txt) in reference.items():
            assert rows[key]["clip_score"] == pytest.approx(score, abs=1e-4), (batch_size, key)
            np.testing.assert_allclose(rows[key]["image_embedding"], img, atol=2e-3)  # stored as float16
            np.testing.assert_allclose(rows[key]["text_embedding"], txt, atol=2e-3)


def test_runs_only_on_survivors_and_a_new_threshold_reuses_the_scores(tmp_path, client, tiny_clip):
    captions = ["ok caption here", "no", "another fine caption", "x", "a third good one", "y", "fourth long enough caption"]
    samples = _samples(len(captions), captions=captions)
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    log = tmp_path / "scored.txt"
    reference = _reference_scores(tiny_clip, samples)
    survivors = {k for k, m in samples if len(m["txt"].split()) >= 3}
    threshold = float(np.median([reference[k][0] for k in survivors]))
    steps = [
        {"annotate": "caption_info"},
        {"id": "caption", "filter": "caption_words >= 3"},
        {"id": "clip", "annotate": "counted_clip_score", **tiny_clip.fields, "log": str(log)},
        {"id": "clip_threshold", "filter": f"clip_score >= {threshold:.6f}"},
    ]
    first = mmcurate.curate(shard, _recipe(*steps), tmp_path / "run", client=client, quiet=True)
    scored = log.read_text().split()
    assert sorted(scored) == sorted(survivors)  # each survivor once, nothing dropped earlier
    assert first.computed["clip"] == len(survivors)
    kept = {r["key"] for r in pq_rows(first) if r["kept"]}
    assert kept == {k for k in survivors if reference[k][0] >= float(f"{threshold:.6f}")}

    lowest = min(reference[k][0] for k in survivors) - 0.01  # scores of random weights can be negative
    second = mmcurate.curate(
        shard, _recipe(*steps), tmp_path / "run", client=client, quiet=True, overwrite=True, overrides=[f"clip_threshold.expr=clip_score >= {lowest:.6f}"]
    )
    assert second.computed["clip"] == 0  # the model did not run again
    assert log.read_text().split() == scored
    assert second.kept == len(survivors)


def pq_rows(result):
    import pyarrow.parquet as pq

    return pq.read_table(result.decisions_path).to_pylist()


def test_changing_the_checkpoint_recomputes(tmp_path, client, tiny_clip):
    import open_clip

    shard = str(make_shard(tmp_path / "000000.tar", _samples(3)))
    recipe = _recipe({"annotate": "clip_score", **tiny_clip.fields})
    first = mmcurate.curate(shard, recipe, tmp_path / "run", client=client, quiet=True)
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(open_clip.create_model(TINY_NAME).state_dict(), other)
    second = mmcurate.curate(shard, recipe, tmp_path / "run", client=client, quiet=True, overrides=[f"clip_score.checkpoint={other}"], overwrite=True)
    assert first.computed["clip_score"] == second.computed["clip_score"] == 3
    again = mmcurate.curate(shard, recipe, tmp_path / "run", client=client, quiet=True, overwrite=True)
    assert again.computed["clip_score"] == 0  # the first checkpoint's rows are still stored


def test_clip_tags_columns_follow_the_config(tmp_path, client, tiny_clip):
    concepts = ["red: a red photo | a blue photo", "dog_like: a dog | a car"]
    steps = [{"annotate": "clip_tags", **tiny_clip.fields, "concepts": concepts}, {"filter": "tag_red >= 0 and tag_dog_like <= 1"}]
    samples = _samples(4)
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    result = mmcurate.curate(shard, _recipe(*steps), tmp_path / "run", client=client, quiet=True)
    rows = _annotations(result)

    model, preprocess, tokenizer = tiny_clip.reference()
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(torch.stack([preprocess(Image.open(io.BytesIO(m["jpg"]))) for _, m in samples])), dim=-1)
        prompts = torch.nn.functional.normalize(model.encode_text(tokenizer(["a red photo", "a blue photo", "a dog", "a car"])), dim=-1)
        logits = model.logit_scale.exp() * img @ prompts.T
    for i, (key, _) in enumerate(samples):
        red = torch.softmax(logits[i, :2], 0)[0]
        dog = torch.softmax(logits[i, 2:], 0)[0]
        assert rows[key]["tag_red"] == pytest.approx(float(red), abs=1e-4)
        assert rows[key]["tag_dog_like"] == pytest.approx(float(dog), abs=1e-4)
    assert "tag_watermark" not in rows[samples[0][0]]

    with pytest.raises(mmcurate.RecipeError, match="tag_watermark"):
        _recipe(*steps[:1], {"filter": "tag_watermark < 0.5"})
    defaults = mmcurate.Recipe.from_dict({"name": "t", "steps": [{"annotate": "clip_tags", **tiny_clip.fields}, {"filter": "tag_watermark < 0.5 and tag_nsfw < 0.5 and tag_text_heavy < 0.9"}]})
    assert len(defaults.steps) == 2
    with pytest.raises(mmcurate.RecipeError, match="NAME: PROMPT"):
        _recipe({"annotate": "clip_tags", **tiny_clip.fields, "concepts": ["no prompts here"]})


def test_semantic_dedup_reads_the_clip_image_embeddings(tmp_path, client, tiny_clip):
    samples = _samples(6)
    copies = [(f"copy{i}", {"jpg": samples[i][1]["jpg"], "txt": b"a different caption"}) for i in (1, 4)]
    shard = str(make_shard(tmp_path / "000000.tar", samples + copies))
    steps = [
        {"annotate": "clip_score", **tiny_clip.fields, "embeddings": True},
        {"dedup": "semantic", "column": "image_embedding", "eps": 0.003, "clusters": 1},
    ]
    result = mmcurate.curate(shard, _recipe(*steps), tmp_path / "run", client=client, quiet=True)
    dropped = {r["key"]: r["reason"] for r in pq_rows(result) if not r["kept"]}
    assert dropped == {"copy1": "semantic_duplicate_of:s0001", "copy4": "semantic_duplicate_of:s0004"}


def test_errors_become_drop_reasons(tmp_path, client, tiny_clip):
    samples = _samples(2) + [("broken", {"jpg": b"\xff\xd8 not a jpeg", "txt": b"a caption"}), ("mute", {"jpg": image_bytes(seed=5)})]
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    result = mmcurate.curate(shard, _recipe({"annotate": "clip_score", **tiny_clip.fields}), tmp_path / "run", client=client, quiet=True)
    reasons = {r["key"]: r["reason"] for r in pq_rows(result) if not r["kept"]}
    assert reasons["broken"].startswith("decode_error")
    assert reasons["mute"].startswith("missing_text")
    assert result.kept == 2


def test_the_clip_step_gets_its_own_gpu_group_after_the_cheap_steps():
    plan = build_plan(mmcurate.Recipe.load("laion2b"))
    groups = [s for s in plan.stages if isinstance(s, Group)]
    assert [[s.id for s in g.steps] for g in groups] == [["image_info", "caption_info", "cheap"], ["clip_score", "clip"]]
    assert [g.resources for g in groups] == [{}, {"GPU": 1}]
    assert groups[1].batch_size(64) == 256 * 8


def test_gpu_workers_run_the_gpu_group(tmp_path, tiny_clip):
    """With GPU workers (here one, on a machine that may have no CUDA: the mechanism is the
    same), the CLIP group runs only there and the cheap group anywhere."""
    shards = [str(make_shard(tmp_path / f"{i:06d}.tar", _samples(3, f"k{i}_", seed=i))) for i in range(3)]
    steps = [{"annotate": "image_info"}, {"annotate": "clip_score", **tiny_clip.fields, "device": "auto"}]
    with engine.connect(workers=1, gpus=1, quiet=True) as c:
        result = mmcurate.curate(shards, _recipe(*steps), tmp_path / "run", client=c, quiet=True)
        seen = c.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), sorted(type(a).name for a in shard_task._instances.values())))
        resources = {w: info["resources"] for w, info in c.scheduler_info(n_workers=-1)["workers"].items()}
    assert result.computed["clip_score"] == 9
    gpu = [w for w, r in resources.items() if r.get("GPU")]
    assert len(gpu) == 1 and len(resources) == 2
    assert seen[gpu[0]][0] == "0" and "clip_score" in seen[gpu[0]][1]
    (cpu,) = set(resources) - set(gpu)
    assert "clip_score" not in seen[cpu][1]


def test_missing_weights_fail_before_any_work_with_the_fix(tmp_path):
    """A cold CLI start, weights neither cached nor allowed to download: exit 2, naming the
    model, its tag and the override that fixes it, before --out exists (how fast: scripts/bench_cold_start.py)."""
    shard = make_shard(tmp_path / "000000.tar", _samples(2))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "filter", str(shard), "--recipe", "laion2b", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr
    assert "'ViT-B-32'" in message and "pretrained='openai'" in message and "HF_HUB_OFFLINE" in message
    assert "step clip_score" in message and "--set clip_score.checkpoint=/path/to/weights.pt" in message
    assert not out.exists()  # nothing started


def test_an_unreachable_hub_costs_one_connection_attempt_and_no_download(tmp_path, monkeypatch, capsys):
    """Network allowed but the hub down: one probe of the endpoint's own host and port, then
    the error; no download is tried (open_clip's would retry for half a minute)."""
    import socket

    from huggingface_hub import constants

    from mmcurate import cli

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempts: list[object] = []
    connect = socket.socket.connect

    def counted(sock, address):
        attempts.append(address)
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", counted)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    shard = make_shard(tmp_path / "000000.tar", _samples(2))
    assert cli.main(["filter", str(shard), "--recipe", "laion2b", "--out", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err
    assert "127.0.0.1 cannot be reached" in message and "--set clip_score.checkpoint=" in message, message
    assert attempts == [("127.0.0.1", port)]
    assert not (tmp_path / "run").exists()


def test_unknown_tag_and_missing_checkpoint_are_named(tmp_path, tiny_clip):
    shard = str(make_shard(tmp_path / "000000.tar", _samples(1)))
    with pytest.raises(annotators.AnnotatorUnavailable, match="no pretrained tag 'nope'.*known: openai"):
        mmcurate.curate(shard, _recipe({"annotate": "clip_score", "model": "ViT-B-32", "pretrained": "nope"}), tmp_path / "a", quiet=True)
    with pytest.raises(annotators.AnnotatorUnavailable, match="checkpoint /no/such.pt: no such file"):
        mmcurate.curate(shard, _recipe({"annotate": "clip_score", **tiny_clip.fields, "checkpoint": "/no/such.pt"}), tmp_path / "b", quiet=True)
    with pytest.raises(mmcurate.RecipeError, match="field 'device'"):
        _recipe({"annotate": "clip_score", **tiny_clip.fields, "device": "tpu"})


def test_cached_pretrained_weights_resolve_without_network(tmp_path, monkeypatch):
    """A tag whose weights sit in the Hugging Face cache resolves offline, to that file."""
    from huggingface_hub import constants

    from mmcurate.steps.clip import weights

    snapshot = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "refs").mkdir()
    (tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = ClipScoreConfig(model="ViT-B-32", pretrained="openai")
    assert weights.weights_file(config) == str(snapshot / "open_clip_model.safetensors")
    assert ClipScore.prepare(config) == {"weights_file": "open_clip_model.safetensors", "weights_sha256": hashlib.sha256(b"weights").hexdigest()}
    assert weights.pretrained_cfg(config)["quick_gelu"]  # the loader forces QuickGELU for OpenAI weights


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_gpu_decode_matches_the_pillow_path(tiny_clip):
    from mmcurate.steps.clip.encoder import load_encoder
    from mmcurate.steps.clip.images import PixelMaker

    config = ClipScoreConfig(**{**tiny_clip.fields, "device": "cuda", "precision": "fp32"})
    encoder = load_encoder(config)
    views = [_view(f"k{i}", {"jpg": image_bytes(200 + 7 * i, 150 + 3 * i, seed=i)}) for i in range(6)]
    views.append(_view("bad", {"jpg": b"\xff\xd8\xff\xe0 broken"}))
    on_gpu = PixelMaker(encoder, gpu_decode=True)(views)
    pillow = PixelMaker(encoder, gpu_decode=False)(views)
    assert on_gpu.positions == pillow.positions == list(range(6))
    assert on_gpu.errors.keys() == pillow.errors.keys() == {6}
    # nvJPEG and libjpeg differ in IDCT rounding, and tensor bicubic resize is not Pillow's:
    # pixels agree to a few grey levels, scores to well under a CLIP threshold step.
    assert (on_gpu.wait() - pillow.wait()).abs().mean() < 0.05
    a, b = encoder.encode_images(on_gpu.wait()), encoder.encode_images(pillow.wait())
    assert torch.allclose((a * b).sum(-1), torch.ones(6, device=a.device), atol=5e-3)


@needs_cuda
def test_fp16_on_cuda_scores_close_to_fp32_reference(tmp_path, tiny_clip):
    samples = _samples(10)
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    reference = _reference_scores(tiny_clip, samples)
    step = {"annotate": "clip_score", **tiny_clip.fields, "device": "auto", "batch_size": 4}  # fp16 on the GPU worker
    result = mmcurate.curate(shard, _recipe(step), tmp_path / "run", workers=1, quiet=True)
    rows = _annotations(result)
    # fp16 tolerance: on an H200 the largest difference was 0.0004 (nvJPEG decoding, opt-in, moved
    # scores by up to 0.015 and is therefore off by default)
    for key, (score, _, _) in reference.items():
        assert rows[key]["clip_score"] == pytest.approx(score, abs=2e-3)
