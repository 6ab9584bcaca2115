"""Benchmark: mmcurate's video frame sampling and audio decoding, beside decoding every frame.

Generates a set of 720p clips (FFmpeg's testsrc2 / mandelbrot, h264 in mp4 by default) and
times, on one core each (FFmpeg through PyAV with one thread, decord with one thread):

* FFmpeg (PyAV, one thread) decoding every frame, as ``ffmpeg -threads 1 -i X -f null -`` would (the baseline);
* mmcurate ``sample_frames`` as the CLIP annotator would call it (8 frames, short side 224)
  and as ``video_phash`` does (one frame a second, short side 64), in this process;
* the same through the killable decode child with a time limit (what annotators run).

Reported: frames/s, and seconds of video handled per wall second (the ratio against the
baseline is on that: sampling decodes a few frames per clip, the baseline all of them). Then
audio: seconds of audio decoded per wall second by ``decode_audio`` and by the bare decoder.

    python scripts/bench_video.py                       # 2 clips of 10 s (a minute or so)
    python scripts/bench_video.py --clips 6 --seconds 30 --codec vp9
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from synthetic_av import make_audio, make_video  # noqa: E402

from mmcurate.decode.audio import decode_audio  # noqa: E402
from mmcurate.decode.sandbox import decode_audio_limited, sample_frames_limited  # noqa: E402
from mmcurate.decode.video import FrameRequest, probe_video, sample_frames  # noqa: E402

_SOURCES = ["testsrc2", "mandelbrot", "life=ratio=0.3", "cellauto=rule=110:scroll=1"]
_CONTAINER = {"h264": "mp4", "hevc": "mp4", "vp9": "webm", "av1": "mkv", "mpeg4": "mkv"}


def _decode_all(path: Path) -> float:
    """Seconds to decode every frame of ``path``'s first stream with FFmpeg on one thread."""
    import av

    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams[0]
        stream.codec_context.thread_count = 1
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - start


def _timed(fn, repeat: int) -> float:
    """Best of ``repeat`` wall times (the machine may be shared)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2, help="video clips to generate (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip, s (default: %(default)s)")
    parser.add_argument("--size", default="1280x720", help="clip resolution WxH (default: %(default)s)")
    parser.add_argument("--fps", type=int, default=30, help="clip frame rate (default: %(default)s)")
    parser.add_argument("--codec", default="h264", choices=sorted(_CONTAINER), help="video codec (default: %(default)s)")
    parser.add_argument("--gop", type=int, default=None, help="keyframe interval in frames (default: the encoder's, 250 for h264)")
    parser.add_argument("--audio-clips", type=int, default=4, help="audio clips of 30 s, flac and mp3 (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=2, help="timing repeats, best kept (default: %(default)s)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    container = _CONTAINER[args.codec]

    with tempfile.TemporaryDirectory() as tmp:
        print(f"generating {args.clips} clip(s): {args.seconds:g} s, {width}x{height}, {args.fps} fps, {args.codec}/{container}, keyframe every {args.gop or 'default'} frames ...", flush=True)
        clips = []
        for i in range(args.clips):
            gop = {"g": str(args.gop)} if args.gop else None
            data = make_video(args.seconds, (width, height), args.fps, args.codec, container, _SOURCES[i % len(_SOURCES)], options=gop)
            path = Path(tmp) / f"clip{i}.{container}"
            path.write_bytes(data)
            clips.append((path, data, probe_video(data)))
        total_frames = sum(info.frames for _, _, info in clips)
        total_s = sum(info.duration_s for _, _, info in clips)
        print(f"  {total_frames} frames, {total_s:.0f} s of video, {sum(len(d) for _, d, _ in clips) / 1e6:.1f} MB\n")

        rows = [("FFmpeg, one thread (all frames)", total_frames, sum(min(_decode_all(p) for _ in range(args.repeat)) for p, _, _ in clips))]
        for label, request in (("CLIP-style: n=8, size=224", FrameRequest(n=8, size=224)), ("video_phash-style: every_s=1, size=64", FrameRequest(every_s=1.0, size=64))):
            frames = sum(len(sample_frames(d, request).frames) for _, d, _ in clips)
            wall = sum(_timed(lambda d=d: sample_frames(d, request), args.repeat) for _, d, _ in clips)
            rows.append((f"mmcurate {label}", frames, wall))
            sample_frames_limited(clips[0][1], request, timeout_s=120)  # start the child outside the timing
            wall = sum(_timed(lambda d=d: sample_frames_limited(d, request, timeout_s=120), args.repeat) for _, d, _ in clips)
            rows.append(("  same, in the time-limited child", frames, wall))

        base_rate = total_s / rows[0][2]
        print(f"{'video (one core)':48} {'frames':>7} {'wall s':>8} {'frames/s':>9} {'video s/s':>10} {'vs all':>10}")
        for label, frames, wall in rows:
            rate = total_s / wall
            print(f"{label:48} {frames:7d} {wall:8.2f} {frames / wall:9.1f} {rate:10.1f} {rate / base_rate:9.2f}x")

        if args.audio_clips:
            print(f"\ngenerating {args.audio_clips} audio clip(s) of 30 s (44.1 kHz stereo, flac and mp3) ...", flush=True)
            sounds = []
            for i in range(args.audio_clips):
                fmt = ("flac", "mp3")[i % 2]
                data = make_audio(fmt, seconds=30, rate=44100, channels=2, source=f"anoisesrc=amplitude=0.{i + 1}:seed={i}")
                path = Path(tmp) / f"sound{i}.{fmt}"
                path.write_bytes(data)
                sounds.append((path, data, fmt))
            seconds = 30.0 * len(sounds)
            ff = sum(min(_decode_all(p) for _ in range(args.repeat)) for p, _, _ in sounds)
            ours = sum(_timed(lambda d=d: decode_audio(d), args.repeat) for _, d, _ in sounds)
            decode_audio_limited(sounds[0][1], timeout_s=120)
            child = sum(_timed(lambda d=d: decode_audio_limited(d, timeout_s=120), args.repeat) for _, d, _ in sounds)
            print(f"{'audio (one process)':48} {'audio s/s':>10} {'vs bare':>10}")
            for label, wall in (("FFmpeg, bare decoder", ff), ("mmcurate decode_audio (PyAV)", ours), ("  same, in the time-limited child", child)):
                print(f"{label:48} {seconds / wall:10.0f} {ff / wall:9.2f}x")
    print(f"\n(best of {args.repeat} runs each; on a shared machine compare the ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
