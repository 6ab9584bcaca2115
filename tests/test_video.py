"""Video decoding on real files made by PyAV's encoders: codecs, containers, rotation, broken files,
the time limit, frame sampling, and video near-duplicates through the real engine."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import mmcurate
from av_media import CODECS, broken_videos, run_demo_shard, video
from conftest import make_shard
from mmcurate.decode import DecodeError
from mmcurate.decode.sandbox import (
    DecodeTimeout,
    _child,
    probe_video_limited,
    sample_frames_limited,
)
from mmcurate.decode.video import FrameRequest, frame_indices, probe_video, sample_frames
from mmcurate.steps.sampleview import SampleView
from mmcurate.io.tarread import Member, Sample


def _reference_frame(data: bytes, index: int) -> np.ndarray:
    """Frame ``index`` as FFmpeg decodes it, counting every frame from the start (no seeking),
    turned upright by its display rotation: (H, W, 3) uint8."""
    import av

    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return np.rot90(frame.to_ndarray(format="rgb24"), k=round(frame.rotation / 90))
    raise IndexError(index)


@pytest.mark.parametrize("codec,container", CODECS)
def test_each_codec_and_container_decodes_with_the_fallback_where_decord_fails(codec, container):
    data = video(codec, container)
    info = probe_video_limited(data)
    assert (info.codec, info.width, info.height, info.fps, info.frames, info.rotation, info.has_audio) == (
        codec, 96, 64, 10.0, 20, 0, False,
    )
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    got = sample_frames_limited(data, FrameRequest(n=4, size=32))
    assert got.frames.shape == (4, 32, 48, 3) and got.frames.dtype == np.uint8
    assert got.decoder == ("pyav" if codec == "av1" else "decord")
    assert got.timestamps_s == pytest.approx([0.2, 0.7, 1.2, 1.7])
    # The sampled frame is the picture FFmpeg decodes at that index.
    full = sample_frames_limited(data, FrameRequest(n=4))
    assert np.abs(full.frames[1].astype(int) - _reference_frame(data, 7)).mean() < 1.0


FALLBACK_TOLERANCE = 1.0
"""Mean absolute difference (0-255 scale) between decord's and PyAV's frames at native size.
Frames resized in the decoder differ more (both scale bilinearly with FFmpeg's swscale, but
decord sets it up differently for some codecs): up to RESIZED_TOLERANCE."""
RESIZED_TOLERANCE = 6.0


@pytest.mark.parametrize("codec,container", [c for c in CODECS if c[0] != "av1"])
def test_decord_and_the_pyav_fallback_give_the_same_frames(codec, container, monkeypatch):
    from synthetic_av import make_video

    # 100 frames, a keyframe every 10: picks 3.3 s apart seek (to the keyframe before), 1.5 s apart decode on
    data = make_video(seconds=10.0, codec=codec, container=container, options={"g": "10"})
    request = FrameRequest(n=3)
    a = sample_frames(data, request)
    monkeypatch.setenv("MMCURATE_VIDEO_DECODER", "pyav")
    b = sample_frames(data, request)
    assert (a.decoder, b.decoder) == ("decord", "pyav")
    assert a.timestamps_s == b.timestamps_s and a.frames.shape == b.frames.shape
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < FALLBACK_TOLERANCE
    small = FrameRequest(every_s=1.5, size=40)  # decord resizes 60x40 in its decoder (not 48x32: see below)
    monkeypatch.setenv("MMCURATE_VIDEO_DECODER", "auto")
    a = sample_frames(data, small)
    monkeypatch.setenv("MMCURATE_VIDEO_DECODER", "pyav")
    b = sample_frames(data, small)
    assert a.frames.shape == b.frames.shape == (7, 40, 60, 3)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < RESIZED_TOLERANCE


def test_the_pyav_fallback_turns_rotated_frames_upright(monkeypatch):
    monkeypatch.setenv("MMCURATE_VIDEO_DECODER", "pyav")
    data = video("h264", "mp4", rotation=90)
    got = sample_frames(data, FrameRequest(n=1))
    assert got.decoder == "pyav" and got.frames.shape == (1, 96, 64, 3)
    assert np.abs(got.frames[0].astype(int) - _reference_frame(data, 10)).mean() < FALLBACK_TOLERANCE


def test_video_demo_shard_decisions_are_the_same_with_the_pyav_fallback(client, tmp_path, monkeypatch):
    """What aarch64 Linux and macOS get (no decord wheel): the same run on the same shard."""
    _, with_decord, _ = run_demo_shard(client, tmp_path / "decord", "video", "video-default")
    monkeypatch.setenv("MMCURATE_VIDEO_DECODER", "pyav")  # inherited by a new cluster's workers
    shard = Path(__file__).resolve().parent.parent / "shards" / "video-000000.tar"
    result = mmcurate.curate(str(shard), "video-default", tmp_path / "pyav", workers=1, quiet=True)
    with_pyav = {r["key"]: r["step"] for r in mmcurate.open_run(result.out).decisions.to_pylist()}
    assert with_pyav == with_decord


def test_rotated_video_reports_rotation_and_decodes_upright():
    data = video("h264", "mp4", rotation=90)
    info = probe_video_limited(data)
    assert (info.rotation, info.width, info.height) == (90, 64, 96)  # upright: portrait
    got = sample_frames_limited(data, FrameRequest(n=1))
    assert got.frames.shape == (1, 96, 64, 3)
    assert np.abs(got.frames[0].astype(int) - _reference_frame(data, 10)).mean() < 1.0
    small = sample_frames_limited(data, FrameRequest(n=2, size=40))
    assert small.frames.shape == (2, 60, 40, 3)


@pytest.mark.parametrize("width", [48, 72])
def test_widths_decord_mis_sizes_are_resized_correctly(width):
    data = video("h264", "mp4", size=(width * 2, width * 2))
    got = sample_frames(data, FrameRequest(n=2, size=width))
    assert got.decoder == "decord" and got.frames.shape == (2, width, width, 3)


def test_sampling_every_s_and_limits():
    info = probe_video(video())
    assert frame_indices(info, FrameRequest(every_s=0.5)).tolist() == [0, 5, 10, 15]
    assert frame_indices(info, FrameRequest(every_s=0.5, max_frames=2)).tolist() == [0, 5]
    assert frame_indices(info, FrameRequest(n=100)).tolist() == list(range(20))  # no repeats
    got = sample_frames(video(), FrameRequest(every_s=1.0, size=1000))
    assert got.frames.shape == (2, 64, 96, 3)  # never upscaled
    with pytest.raises(ValueError, match="exactly one"):
        FrameRequest(n=2, every_s=1.0)


@pytest.mark.parametrize("name", ["truncated", "zero_length", "audio_only", "garbage"])
def test_broken_videos_raise_a_decode_error_with_a_reason(name):
    data = broken_videos()[name]
    with pytest.raises(DecodeError, match=r"^decode_error: ") as err:
        sample_frames_limited(data, FrameRequest(n=2))
    assert "0x" not in str(err.value) and ".cpp" not in str(err.value)  # stable, readable reasons
    if name == "audio_only":
        assert str(err.value) == "decode_error: no video stream (audio only)"


def test_a_decode_past_its_time_limit_is_killed_and_the_next_one_works():
    data = video()
    sample_frames_limited(data, FrameRequest(n=1), timeout_s=30)  # child started
    before = _child().pid
    with pytest.raises(DecodeTimeout, match=r"^decode_timeout: video_frames took longer than 1e-06 s"):
        sample_frames_limited(data, FrameRequest(n=20), timeout_s=1e-6)
    assert _child().pid is None  # killed
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)
    assert sample_frames_limited(data, FrameRequest(n=2), timeout_s=30).frames.shape[0] == 2


def test_a_hung_decoder_is_killed_at_the_deadline():
    """SIGSTOP freezes the child the way a decoder stuck in C code would: it cannot answer."""
    data = video()
    probe_video_limited(data, timeout_s=30)
    stopped = _child().pid
    os.kill(stopped, signal.SIGSTOP)
    with pytest.raises(DecodeTimeout, match=r"^decode_timeout: video_info took longer than 1 s \(decoder killed\)"):
        probe_video_limited(data, timeout_s=1.0)
    assert _child().pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(stopped, 0)  # killed and reaped, not left stopped (or a zombie)
    assert probe_video_limited(data, timeout_s=30).frames == 20
    assert _child().pid != stopped


def test_a_decoder_crash_is_this_members_error_and_the_next_member_decodes():
    import threading

    data = video()
    probe_video_limited(data, timeout_s=30)
    pid = _child().pid
    os.kill(pid, signal.SIGSTOP)  # mid-request from here on ...
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()  # ... then it "crashes"
    with pytest.raises(DecodeError, match=r"^decode_error: decoder process died during video_info \(signal SIGKILL\)"):
        probe_video_limited(data, timeout_s=30)
    assert probe_video_limited(data, timeout_s=30).frames == 20


def test_a_short_lived_threads_decode_child_is_reaped():
    """The kernel kills a thread's child when the thread ends (as CLIP's preparing thread does
    after each call); the next thread's first decode reaps it, so no zombie piles up per call."""
    import threading

    data = video()
    pids = []

    def decode_in_a_new_thread():
        probe_video_limited(data, timeout_s=30)
        pids.append(_child().pid)

    for _ in range(3):
        thread = threading.Thread(target=decode_in_a_new_thread)
        thread.start()
        thread.join()
    assert len(set(pids)) == 3
    for pid in pids[:2]:  # reaped: no longer our child, not even a zombie
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_sampleview_caches_frames_per_request():
    view = SampleView(Sample("k", [Member("k.mp4", "mp4", video())]), {"video": ("mp4",)})
    a = view.video_frames(n=3, size=32)
    assert view.video_frames(n=3, size=32) is a
    assert view.video_frames(n=2, size=32) is not a
    assert len(a.images()) == 3 and a.images()[0].size == (48, 32)
    missing = SampleView(Sample("k", []), {"video": ("mp4",)})
    with pytest.raises(DecodeError, match="missing_video"):
        missing.video_frames(n=1)


def _video_recipe(**video_info):
    return mmcurate.Recipe.from_dict(
        {
            "name": "video-test",
            "modalities": {"video": ["mp4", "mkv", "webm"], "text": ["txt"]},
            "steps": [
                {"annotate": "video_info", **video_info},
                {"id": "video_shape", "filter": "duration_s >= 1.5 and duration_s <= 6 and width >= 64 and height >= 64"},
                {"annotate": "video_phash", "every_s": 0.5},
                {"dedup": "video_phash", "max_distance": 8, "keep": "highest duration_s"},
            ],
        }
    )


def _decisions(result) -> dict[str, tuple[bool, str | None, str | None]]:
    table = mmcurate.open_run(result.out).decisions.to_pylist()
    return {r["key"]: (r["kept"], r["step"], r["reason"]) for r in table}


def test_video_run_end_to_end(client, tmp_path):
    """Every codec, a rotated clip, broken files and planted near-duplicates through the engine."""
    ours = dict(seconds=3.0, source="testsrc2", size=(128, 96), rate=10)
    sources = ["testsrc", "mandelbrot", "life=seed=3:ratio=0.2", "cellauto=rule=30:seed=2:scroll=1", "smptebars"]
    samples = [(f"{c}_{ct}", {ct: video(c, ct, source=src), "txt": b"x"}) for (c, ct), src in zip(CODECS[:5], sources)]
    samples += [
        ("rotated", {"mp4": video(rotation=90, source="sierpinski"), "txt": b"x"}),
        ("original", {"mp4": video(**ours), "txt": b"x"}),
        ("reencoded", {"webm": video("vp9", "webm", **ours, video_filter="scale=96:72"), "txt": b"x"}),
        ("trimmed", {"mkv": video("h264", "mkv", **{**ours, "seconds": 2.0}, start_s=1.0), "txt": b"x"}),
        ("letterboxed", {"mp4": video(**ours, video_filter="scale=128:72,pad=128:96:0:12:black"), "txt": b"x"}),
        ("too_short", {"mp4": video(seconds=1.0), "txt": b"x"}),
        ("too_small", {"mp4": video(size=(48, 32)), "txt": b"x"}),
        *[(name, {"mp4": data, "txt": b"x"}) for name, data in broken_videos().items()],
        ("no_video_member", {"txt": b"only a caption"}),
    ]
    shard = make_shard(tmp_path / "videos.tar", samples)
    result = mmcurate.curate(str(shard), _video_recipe(), tmp_path / "run", client=client, quiet=True)
    decided = _decisions(result)
    assert result.samples_in == len(samples) == result.kept + result.dropped
    kept = sorted(k for k, (ok, _, _) in decided.items() if ok)
    assert kept == sorted([f"{c}_{ct}" for c, ct in CODECS[:5]] + ["rotated", "original"])
    for name in ("reencoded", "trimmed", "letterboxed"):
        assert decided[name] == (False, "dedup_video_phash", "video_near_duplicate_of:original"), name
    assert decided["too_short"][1:] == ("video_shape", "fails duration_s >= 1.5")
    assert decided["too_small"][1:] == ("video_shape", "fails width >= 64")
    for name in ("truncated", "zero_length", "audio_only", "garbage"):
        assert decided[name][1] == "video_info" and decided[name][2].startswith("decode_error: "), decided[name]
    assert decided["no_video_member"][2].startswith("missing_video")
    table = mmcurate.open_run(result.out).annotations().to_pylist()
    rotated = next(r for r in table if r["key"] == "rotated")
    assert (rotated["rotation"], rotated["width"], rotated["height"]) == (90, 64, 96)


def test_decode_timeout_drops_each_sample_and_accounting_holds(client, tmp_path):
    samples = [(f"v{i}", {"mp4": video(), "txt": b"x"}) for i in range(2)] + [("broken", {"mp4": b"", "txt": b"x"})]
    shard = make_shard(tmp_path / "videos.tar", samples)
    result = mmcurate.curate(str(shard), _video_recipe(timeout_s=1e-6), tmp_path / "run", client=client, quiet=True)
    decided = _decisions(result)
    assert result.samples_in == 3 and result.kept == 0
    assert [decided[f"v{i}"][2].split(":")[0] for i in range(2)] == ["decode_timeout", "decode_timeout"]
    assert decided["broken"][2] == "decode_error: empty video member"  # no decode needed to know


def test_video_demo_shard_drops_exactly_what_was_planted(client, tmp_path):
    planted, steps, result = run_demo_shard(client, tmp_path, "video", "video-default")
    expected = {
        "normal": None, "rotated": "dedup_video_phash", "reencoded": "dedup_video_phash", "trimmed": "dedup_video_phash",
        "letterboxed": "dedup_video_phash", "copy": "dedup_exact", "too_short": "video_shape",
        "too_long": "video_shape", "tiny": "video_shape", "truncated": "video_info", "garbage": "video_info",
        "empty": "video_info", "audio_only": "video_info", "empty_caption": "caption",
    }
    assert steps == {k: expected[kind] for k, kind in planted.items()}
    assert result.samples_in == len(planted) == result.kept + result.dropped


def _arrays(videos, score=None, prior=None):
    from mmcurate.steps.dedup.compute import DedupArrays

    n = len(videos)
    return DedupArrays(
        [np.asarray(v, dtype=np.uint64) for v in videos],
        {},
        np.zeros(n) if score is None else np.asarray(score, dtype=float),
        np.zeros(n, bool) if prior is None else np.asarray(prior),
    )


def test_video_dedup_links_videos_sharing_most_frames_and_honours_keep_and_prior():
    from mmcurate.steps.dedup.compute import find_parents
    from mmcurate.steps.dedup.config import VideoNearConfig

    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**63, 10, dtype=np.uint64)
    near = a ^ np.uint64(0b111)  # every frame 3 bits away
    trim = a[3:7]  # a part of a: all of its frames match
    other = rng.integers(0, 2**63, 10, dtype=np.uint64)
    one_shared = np.concatenate([other[:1], rng.integers(0, 2**63, 4, dtype=np.uint64)])  # 1 of 5 frames
    videos = [a, near, trim, other, one_shared, []]
    config = VideoNearConfig(max_distance=4, min_shared=0.5)
    assert find_parents("video_phash", config, _arrays(videos)).parent.tolist() == [0, 0, 0, 3, 4, 5]
    assert find_parents("video_phash", VideoNearConfig(max_distance=2), _arrays(videos)).parent.tolist() == [0, 1, 0, 3, 4, 5]
    assert find_parents("video_phash", VideoNearConfig(max_distance=4, min_shared=0.2), _arrays(videos)).parent.tolist() == [0, 0, 0, 3, 3, 5]
    kept_by_score = find_parents("video_phash", config, _arrays(videos, score=[1, 5, 2, 0, 0, 0])).parent
    assert kept_by_score.tolist() == [1, 1, 1, 3, 4, 5]
    prior = find_parents("video_phash", config, _arrays(videos, prior=[False, False, True, False, False, False])).parent
    assert prior.tolist() == [2, 2, 2, 3, 4, 5]


def test_video_dedup_settings_are_checked_when_the_recipe_loads():
    with pytest.raises(mmcurate.RecipeError, match="min_shared must be in"):
        mmcurate.Recipe.from_dict(
            {"name": "x", "modalities": {"video": ["mp4"]},
             "steps": [{"annotate": "video_phash"}, {"dedup": "video_phash", "min_shared": 1.5}]}
        )
    with pytest.raises(mmcurate.RecipeError, match="column 'video_phash' is not produced"):
        mmcurate.Recipe.from_dict({"name": "x", "steps": [{"annotate": "video_info"}, {"dedup": "video_phash"}]})


@pytest.mark.parametrize(
    "step,message",
    [
        ({"annotate": "video_info", "timeout_s": 0}, "timeout_s must be > 0"),
        ({"annotate": "video_phash", "every_s": 0}, "every_s must be > 0"),
        ({"annotate": "video_phash", "size": 0}, "size must be >= 1"),
    ],
)
def test_bad_decode_settings_fail_when_the_recipe_loads(step, message):
    with pytest.raises(mmcurate.RecipeError, match=message):
        mmcurate.Recipe.from_dict({"name": "x", "modalities": {"video": ["mp4"]}, "steps": [step]})


def test_timeout_null_decodes_in_process():
    recipe = mmcurate.Recipe.from_dict(
        {"name": "x", "modalities": {"video": ["mp4"]}, "steps": [{"annotate": "video_info", "timeout_s": None}]}
    )
    from concurrent.futures import ThreadPoolExecutor

    from mmcurate.steps.annotators import get
    from mmcurate.decode import sandbox

    def annotate_in_a_fresh_thread():
        view = SampleView(Sample("k", [Member("k.mp4", "mp4", video())]), {"video": ("mp4",)})
        row = get("video_info")(recipe.steps[0].config).annotate_one(view)
        return row, getattr(sandbox._local, "child", None)

    with ThreadPoolExecutor(1) as pool:
        row, child = pool.submit(annotate_in_a_fresh_thread).result()
    assert (row["frames"], row["codec"]) == (20, "h264")
    assert child is None  # no decode process was started
