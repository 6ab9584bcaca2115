"""Write the video and audio demo shards, with planted defects, from FFmpeg test patterns and speech.

Everything is encoded with PyAV (FFmpeg bundled in its wheel): no ffmpeg command is needed.

Output: ``video-000000.tar`` (video-text: ``KEY.mp4|mkv|webm|mov`` + ``KEY.txt`` + ``KEY.json``)
and ``audio-000000.tar`` (audio-text: ``KEY.flac|wav|mp3|ogg|opus|m4a`` + ``KEY.txt`` + ``KEY.json``).
``KEY.json`` records what was planted (``"planted": KIND``, or ``"normal"``), so a run's
decisions can be checked against it. Both together stay near 1 MB.

Video (160x128 or 176x144 px, 8 fps, 2.5-6 s; FFmpeg lavfi sources such as testsrc2,
mandelbrot, life, cellauto, smptebars; h264/mp4 mostly, also vp9/webm, hevc/mov, av1/mkv
(decord cannot read AV1: decoded by the PyAV fallback), mpeg4/mkv)::

    planted         what                                          expected at video-default
    reencoded       an earlier clip as vp9/webm at lower quality   video_near_duplicate_of
    trimmed         an earlier clip without its first second       video_near_duplicate_of
    letterboxed     an earlier clip scaled down, padded black      video_near_duplicate_of
    copy            an earlier clip's bytes, unchanged             duplicate_of (exact)
    rotated         the first clip's pattern, portrait, shown      video_near_duplicate_of (a quarter
                    turned by rotation metadata                    turn of the first clip; rotation 90)
    too_short       1 s                                            fails video_shape
    too_long        75 s (1 fps)                                   fails video_shape
    tiny            64x48 px                                       fails video_shape
    truncated       first 40% of a valid mp4                       decode_error
    garbage         random bytes named .mp4                        decode_error
    empty           zero-byte .mp4                                 decode_error
    audio_only      an .mp4 with only an audio track               decode_error (no video)
    empty_caption   valid clip, zero-byte .txt                     fails caption

Audio (speech from espeak-ng when installed, else tones and noise; 16-22 kHz)::

    planted         what                                          expected at audio-default
    same_pcm        an earlier .wav re-wrapped as .flac            duplicate_of (PCM hash)
    copy            an earlier clip's bytes, unchanged             duplicate_of
    silent          3 s of digital silence                        fails audio_quality
    clipped         a tone driven 6 dB past full scale            fails audio_quality
    too_short       0.5 s                                          fails audio_length
    too_long        40 s                                           fails audio_length
    truncated       first 30% of a .flac                           decode_error
    garbage         random bytes named .mp3                        decode_error
    empty           zero-byte .wav                                 decode_error
    float_stereo    32-bit float stereo WAV                        kept

Deterministic for a given PyAV/espeak-ng build (bitexact muxing and encoding, fixed seeds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_tar  # noqa: E402
from synthetic_av import make_audio, make_video, speech_wav, transcode_audio  # noqa: E402

_VIDEO_SOURCES = [
    ("testsrc2", "a colourful test pattern with a moving box and a counter"),
    ("mandelbrot=start_scale=3", "a zoom into the mandelbrot fractal"),
    ("life=seed=7:ratio=0.05:mold=10", "conway's game of life spreading over a grid"),
    ("cellauto=rule=30:seed=11:scroll=1", "a one-dimensional cellular automaton scrolling down"),
    ("smptebars", "smpte colour bars on a television screen"),
    ("testsrc", "a test card with a rainbow gradient and a timer"),
    ("mandelbrot=start_scale=1.5:end_scale=0.01", "a slow dive into a fractal coastline"),
    ("gradients=seed=5:speed=0.05", "soft colour gradients drifting slowly"),
    ("cellauto=rule=110:seed=5:scroll=1", "rule 110 automaton patterns growing"),
    ("rgbtestsrc", "red green and blue bars of a test signal"),
    ("sierpinski=seed=4:jump=10", "a sierpinski carpet shifting in steps"),
    ("mandelbrot=start_x=-0.75:start_y=0.1:start_scale=0.5", "a fractal spiral unfolding"),
    ("life=seed=3:ratio=0.1:death_color=#302010", "sparse life cells on a brown background"),
    ("cellauto=rule=90:seed=3:scroll=1", "a sierpinski triangle drawn by an automaton"),
]

_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a cup of coffee on a wooden table in the morning",
    "rain is falling on the roof of a quiet house",
    "the train to the city leaves at seven thirty",
    "children are playing football in the park",
    "please turn off the lights when you leave the room",
    "the museum opens at nine and closes at five",
    "a small boat is sailing across the calm lake",
    "she reads a book under the old oak tree",
    "the market sells fresh bread and ripe tomatoes",
    "thunder rolls over the mountains in the evening",
    "he plays a slow song on the piano",
]


def _meta(key: str, caption: str, planted: str, **extra: object) -> bytes:
    return json.dumps({"key": key, "caption": caption, "planted": planted, **extra}, sort_keys=True).encode()


def video_samples(rng: np.random.Generator) -> list[tuple[str, dict[str, bytes]]]:
    samples: list[tuple[str, dict[str, bytes]]] = []
    normal: list[tuple[str, bytes, str, dict]] = []

    def add(ext: str, data: bytes, caption: str, planted: str = "normal", **extra: object) -> str:
        key = f"{len(samples):09d}"
        samples.append((key, {ext: data, "txt": caption.encode(), "json": _meta(key, caption, planted, **extra)}))
        return key

    codecs = [("h264", "mp4")] * 3 + [("vp9", "webm"), ("hevc", "mov"), ("h264", "mp4"), ("av1", "mkv"), ("mpeg4", "mkv")]
    for i, (source, caption) in enumerate(_VIDEO_SOURCES):
        codec, container = codecs[i % len(codecs)]
        size = (176, 144) if i % 3 == 0 else (160, 128)
        seconds = float(rng.choice([2.5, 3.0, 4.0, 5.0, 6.0]))
        args = dict(source=source, size=size, rate=8, seconds=seconds)
        data = make_video(codec=codec, container=container, **args)
        key = add(container, data, caption, codec=codec)
        normal.append((key, data, caption, args))

    (k0, d0, c0, a0), (k1, _, c1, a1), (k2, _, c2, a2), (k3, d3, c3, _) = normal[0], normal[1], normal[5], normal[2]
    add("webm", make_video(codec="vp9", container="webm", **a0), c0, "reencoded", of=k0)
    add("mp4", make_video(codec="h264", container="mp4", **a1, start_s=1.0), c1, "trimmed", of=k1)
    w, h = a2["size"]
    add("mp4", make_video(codec="h264", container="mp4", **a2, video_filter=f"scale={w}:{h * 3 // 4},pad={w}:{h}:0:{h // 8}:black"), c2, "letterboxed", of=k2)
    add("mp4", d3, c3, "copy", of=k3)
    add("mp4", make_video(source="testsrc2", size=(128, 160), rate=8, seconds=3, rotation=90), "a test pattern filmed on a phone held upright", "rotated")
    add("mp4", make_video(source="mandelbrot", size=(160, 128), rate=8, seconds=1), "a very short fractal clip", "too_short")
    add("mp4", make_video(source="testsrc", size=(160, 128), rate=1, seconds=75), "a test card shown for over a minute", "too_long")
    add("mp4", make_video(source="testsrc2", size=(64, 48), rate=8, seconds=3), "a tiny pattern", "tiny")
    add("mp4", d0[: len(d0) * 2 // 5], c0, "truncated")
    add("mp4", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), "random bytes that are not a video", "garbage")
    add("mp4", b"", "an empty file", "empty")
    add("mp4", make_audio("m4a", seconds=2), "a tone without any picture", "audio_only")
    add("mp4", make_video(source="smptehdbars", size=(160, 128), rate=8, seconds=3), "", "empty_caption")
    return samples


def audio_samples(rng: np.random.Generator) -> list[tuple[str, dict[str, bytes]]]:
    samples: list[tuple[str, dict[str, bytes]]] = []

    def add(ext: str, data: bytes, caption: str, planted: str = "normal", **extra: object) -> str:
        key = f"{len(samples):09d}"
        samples.append((key, {ext: data, "txt": caption.encode(), "json": _meta(key, caption, planted, **extra)}))
        return key

    speech = shutil.which("espeak-ng") is not None
    formats = ["flac", "wav", "mp3", "ogg", "opus", "m4a"]
    wavs: list[tuple[str, bytes, str]] = []
    for i, sentence in enumerate(_SENTENCES):
        fmt = formats[i % len(formats)]
        if speech:
            wav = speech_wav(sentence, voice=["en", "en-us", "en-gb-x-rp"][i % 3], speed=150 + 10 * (i % 4))
            data = transcode_audio(wav, fmt, rate=16000, channels=1)
            caption = f"a voice saying: {sentence}"
        else:
            freq = int(rng.integers(200, 1200))
            data = make_audio(fmt, seconds=float(rng.uniform(2, 5)), source=f"sine=frequency={freq}")
            caption = f"a steady tone at {freq} hertz"
        key = add(fmt, data, caption)
        if fmt == "wav":
            wavs.append((key, data, caption))

    key, wav, caption = wavs[0]
    add("flac", transcode_audio(wav, "flac"), caption, "same_pcm", of=key)
    first_key, first = samples[0][0], samples[0][1]
    add("flac", first["flac"], first["txt"].decode(), "copy", of=first_key)
    add("wav", make_audio("wav", seconds=3, source="anullsrc=channel_layout=mono"), "a quiet room", "silent")
    add("flac", make_audio("flac", seconds=3, source="sine=frequency=300", audio_filter="volume=24dB"), "a loud distorted hum", "clipped")
    add("ogg", make_audio("ogg", seconds=0.5, source="sine=frequency=880"), "a short beep", "too_short")
    add("mp3", make_audio("mp3", seconds=40, rate=8000, source="sine=frequency=150", options={"b": "8k"}), "a long low drone", "too_long")
    add("flac", first["flac"][: len(first["flac"]) * 3 // 10], first["txt"].decode(), "truncated")
    add("mp3", rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(), "random bytes that are not audio", "garbage")
    add("wav", b"", "an empty file", "empty")
    add("wav", make_audio("wav", seconds=1.5, rate=8000, channels=2, source="sine=frequency=523", codec="pcm_f32le"), "a bright tone in stereo", "float_stereo")
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "shards", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="numpy default_rng seed (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in (("video", video_samples), ("audio", audio_samples)):
        samples = make(np.random.default_rng(args.seed))
        path = args.out / f"{name}-000000.tar"
        write_tar(path, samples)
        print(f"{path}: {len(samples)} samples, {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
