"""CLIP on video samples through the real engine: frames sampled as ``SampleView.video_frames``
returns them, scored by the tiny random-weight open_clip model of ``test_clip``; the reference
is open_clip's own preprocess and encoders on those same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmcurate
from av_media import broken_videos, video
from conftest import image_bytes, make_shard
from mmcurate.steps.clip.images import input_size
from mmcurate.engine.plan import Group, build_plan
from mmcurate.steps.sampleview import SampleView
from mmcurate.io.tarread import Member, Sample
import test_clip
from test_clip import TINY, TinyClip, pq_rows

MODALITIES = {"image": ["jpg"], "video": ["mp4", "webm"], "text": ["txt"]}
FRAMES = 4
tiny_clip = test_clip.tiny_clip  # the session fixture, shared with test_clip
CONCEPTS = ["red: a red photo | a blue photo", "busy: a busy pattern | a plain wall"]


def _videos() -> list[tuple[str, dict[str, bytes]]]:
    return [
        ("bars", {"mp4": video(source="smptebars"), "txt": b"colour bars on a screen"}),
        ("fractal", {"webm": video("vp9", "webm", source="mandelbrot"), "txt": b"a zooming fractal"}),
        ("pattern", {"mp4": video(source="testsrc2", size=(160, 90)), "txt": b"a test pattern with a counter"}),
    ]


def _images() -> list[tuple[str, dict[str, bytes]]]:
    """Two images, and a video sample with a poster image: scored on the image."""
    images = [(f"img{i}", {"jpg": image_bytes(50 + 10 * i, 40, seed=i), "txt": f"a photo number {i}".encode()}) for i in range(2)]
    return images + [("poster", {"jpg": image_bytes(64, 48, seed=7), "mp4": video(source="testsrc"), "txt": b"a poster"})]


def _recipe(*steps) -> mmcurate.Recipe:
    return mmcurate.Recipe.from_dict({"name": "clip-video-test", "modalities": MODALITIES, "steps": list(steps)})


def _reference(tiny: TinyClip, samples) -> dict[str, dict]:
    """Per sample: per-picture scores, the mean embedding, the caption embedding and per-picture
    concept probabilities, from open_clip directly; videos on the frames ``video_frames`` gives
    at the model's input size."""
    model, preprocess, tokenizer = tiny.reference()
    size = TINY["vision_cfg"]["image_size"]
    prompts = [p.strip() for c in CONCEPTS for p in c.split(":", 1)[1].split("|")]
    with torch.no_grad():
        concepts = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    out = {}
    for key, members in samples:
        view = SampleView(Sample(key, [Member(f"{key}.{ext}", ext, data) for ext, data in members.items()]), {k: tuple(v) for k, v in MODALITIES.items()})
        pictures = [view.image()[0]] if view.member("image") else view.video_frames(n=FRAMES, size=size, max_frames=FRAMES).images()
        with torch.no_grad():
            img = torch.nn.functional.normalize(model.encode_image(torch.stack([preprocess(p) for p in pictures])), dim=-1)
            txt = torch.nn.functional.normalize(model.encode_text(tokenizer([members["txt"].decode()])), dim=-1)[0]
            logits = model.logit_scale.exp() * img @ concepts.T
        probs = torch.softmax(logits.view(len(img), -1, 2), dim=-1)[..., 0]  # (pictures, concepts)
        out[key] = {
            "scores": (img @ txt).numpy(),
            "embedding": torch.nn.functional.normalize(img.mean(0), dim=-1).numpy(),
            "text": txt.numpy(),
            "tags": probs.mean(0).numpy(),
            "pictures": len(pictures),
        }
    return out


def _rows(result) -> dict[str, dict]:
    return {row["key"]: row for row in mmcurate.open_run(result.out).annotations().to_pylist()}


def test_frames_are_decoded_at_the_models_input_size(tiny_clip):
    import open_clip

    assert input_size(open_clip.image_transform(224, is_train=False)) == 224
    assert input_size(open_clip.image_transform((336, 336), is_train=False)) == 336
    _, preprocess, _ = tiny_clip.reference()
    assert input_size(preprocess) == TINY["vision_cfg"]["image_size"]


@pytest.mark.parametrize("batch_size", [2, 64])
def test_video_scores_are_open_clips_mean_and_max_over_the_same_frames(tmp_path, client, tiny_clip, batch_size):
    samples = _videos() + _images()
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    reference = _reference(tiny_clip, samples)
    assert [reference[k]["pictures"] for k, _ in samples] == [FRAMES] * 3 + [1] * 3
    model = {**tiny_clip.fields, "batch_size": batch_size, "frames": FRAMES}
    recipe = _recipe({"annotate": "clip_score", **model, "embeddings": True}, {"annotate": "clip_tags", **model, "concepts": CONCEPTS})
    result = mmcurate.curate(shard, recipe, tmp_path / "run", client=client, quiet=True)
    assert result.computed == {"clip_score": 6, "clip_tags": 6}
    rows = _rows(result)
    for key, ref in reference.items():
        row = rows[key]
        assert row["clip_score"] == pytest.approx(float(ref["scores"].mean()), abs=1e-4), key
        assert row["clip_score_max"] == pytest.approx(float(ref["scores"].max()), abs=1e-4), key
        np.testing.assert_allclose(row["image_embedding"], ref["embedding"], atol=2e-3)  # stored as float16
        np.testing.assert_allclose(row["text_embedding"], ref["text"], atol=2e-3)
        assert [row["tag_red"], row["tag_busy"]] == pytest.approx(ref["tags"].tolist(), abs=1e-4), key
    for key, _ in _images():
        assert rows[key]["clip_score_max"] == rows[key]["clip_score"]
    spread = [float(np.ptp(reference[k]["scores"])) for k, _ in _videos()]
    assert max(spread) > 1e-3  # the frames differ, so mean and max are different checks


def test_broken_and_slow_videos_drop_with_their_reason(tmp_path, client, tiny_clip):
    broken = broken_videos()
    samples = _videos()[:1] + _images()[:1] + [
        ("truncated", {"mp4": broken["truncated"], "txt": b"a caption"}),
        ("garbage", {"mp4": broken["garbage"], "txt": b"a caption"}),
        ("silent_film", {"mp4": video(source="testsrc")}),
    ]
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    result = mmcurate.curate(shard, _recipe({"annotate": "clip_score", **tiny_clip.fields, "frames": 2}), tmp_path / "run", client=client, quiet=True)
    reasons = {r["key"]: (r["step"], r["reason"]) for r in pq_rows(result) if not r["kept"]}
    assert set(reasons) == {"truncated", "garbage", "silent_film"}
    assert reasons["truncated"][0] == reasons["garbage"][0] == "clip_score"
    assert reasons["truncated"][1].startswith("decode_error") and reasons["garbage"][1].startswith("decode_error")
    assert reasons["silent_film"][1].startswith("missing_text")
    assert result.samples_in == len(samples) == result.kept + result.dropped and result.kept == 2

    slow = mmcurate.curate(
        shard, _recipe({"annotate": "clip_score", **tiny_clip.fields, "frames": 2, "timeout_s": 1e-6}), tmp_path / "slow", client=client, quiet=True
    )
    reasons = {r["key"]: r["reason"] for r in pq_rows(slow) if not r["kept"]}
    assert reasons[_videos()[0][0]].startswith("decode_timeout")
    assert _images()[0][0] not in reasons  # images have no decode time limit to pass
    assert slow.kept == 1


def test_a_new_threshold_on_a_video_run_recomputes_nothing(tmp_path, client, tiny_clip):
    samples = _videos()
    shard = str(make_shard(tmp_path / "000000.tar", samples))
    scores = {k: float(r["scores"].mean()) for k, r in _reference(tiny_clip, samples).items()}
    low, middle, _ = sorted(scores.values())
    steps = [
        {"annotate": "clip_score", **tiny_clip.fields, "frames": FRAMES},
        {"id": "clip", "filter": f"clip_score >= {(low + middle) / 2:.6f}"},
    ]
    first = mmcurate.curate(shard, _recipe(*steps), tmp_path / "run", client=client, quiet=True)
    assert first.computed["clip_score"] == 3 and first.kept == 2
    lowest = min(scores.values()) - 0.01
    second = mmcurate.curate(
        shard, _recipe(*steps), tmp_path / "run", client=client, quiet=True, overwrite=True, overrides=[f"clip.expr=clip_score >= {lowest:.6f}"]
    )
    assert second.computed["clip_score"] == 0 and second.kept == 3
    third = mmcurate.curate(
        shard, _recipe(*steps), tmp_path / "run", client=client, quiet=True, overwrite=True, overrides=["clip_score.frames=2"]
    )
    assert third.computed["clip_score"] == 3  # other frames, other scores


def test_the_video_clip_recipe_scores_after_the_cheap_steps():
    recipe = mmcurate.Recipe.load("video-clip")
    plan = build_plan(recipe)
    groups = [[s.id for s in stage.steps] for stage in plan.stages if isinstance(stage, Group)]
    assert groups[-1] == ["clip_score", "clip"]
    assert "video_info" in groups[0] and "caption" in groups[0]
    clip = next(s for s in recipe.steps if s.id == "clip_score")
    assert (clip.config.model, clip.config.pretrained, clip.config.frames) == ("ViT-B-32", "openai", 8)
