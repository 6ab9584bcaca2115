"""Audio decoding and ``audio_info`` on real files made by PyAV's encoders, and audio runs through the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mmcurate
from av_media import AUDIO_FORMATS, audio, run_demo_shard, wav_bytes
from conftest import make_shard
from mmcurate.steps.annotators.audio_info import AudioInfo, AudioInfoConfig
from mmcurate.decode.sandbox import decode_audio_limited
from mmcurate.steps.sampleview import SampleView
from mmcurate.io.tarread import Member, Sample

TONE_LUFS = -0.691 + 10 * math.log10((1 / 8) ** 2 / 2)
"""BS.1770 loudness of a mono sine at 1/8 full scale (K-weighting is ~0 dB at 440 Hz)."""


def _info(data: bytes, ext: str = "wav", **config) -> dict:
    view = SampleView(Sample("k", [Member(f"k.{ext}", ext, data)]), {"audio": (ext,)})
    return AudioInfo(AudioInfoConfig(**config)).annotate_one(view)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
@pytest.mark.parametrize("channels", [1, 2])
def test_each_format_decodes_mono_and_stereo(fmt, channels):
    got = decode_audio_limited(audio(fmt, channels=channels))
    assert got.channels == channels
    assert got.sample_rate == (48000 if fmt == "opus" else 16000)
    assert got.duration_s == pytest.approx(1.0, abs=0.08)  # codec priming/padding
    assert got.waveform.dtype == np.float32
    reference = decode_audio_limited(audio("wav", channels=channels)).waveform
    rms = np.sqrt((got.waveform[:, 1000:-1000] ** 2).mean(axis=1))
    assert rms == pytest.approx(np.sqrt((reference**2).mean(axis=1)), rel=0.1)  # the tone survives every codec


@pytest.mark.parametrize("codec", ["pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "pcm_u8"])
def test_int_and_float_wav_decode_to_the_same_tone(codec):
    got = decode_audio_limited(audio("wav", channels=2, codec=codec))
    reference = decode_audio_limited(audio("wav", channels=2, codec="pcm_f32le"))
    assert got.waveform.shape == reference.waveform.shape == (2, 16000)
    assert np.abs(got.waveform - reference.waveform).max() < (0.01 if codec == "pcm_u8" else 1e-4)


def test_resampling():
    got = decode_audio_limited(audio("flac"), sample_rate=8000)
    assert (got.sample_rate, got.waveform.shape) == (8000, (1, 8000))
    spectrum = np.abs(np.fft.rfft(got.waveform[0]))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)  # 1 s: bin = Hz


def _torchaudio():
    try:
        import torchaudio.functional
    except Exception as exc:  # not installed, or built for another torch
        pytest.skip(f"torchaudio is not usable here ({type(exc).__name__}): nothing to compare against")
    return torchaudio


def test_loudness_and_resampling_match_torchaudio_where_it_is_installed():
    import torch

    from mmcurate.steps.annotators.audio_info import loudness_lufs
    from mmcurate.decode.audio import Audio, resample

    torchaudio = _torchaudio()
    rng = np.random.default_rng(0)
    t = np.arange(4 * 44100) / 44100
    speechlike = rng.normal(0, 0.2, t.size) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 4  # syllable-like bursts
    signals = {
        "tone 16 kHz": (decode_audio_limited(audio("wav", seconds=3.0)).waveform, 16000),
        "noise stereo 44.1 kHz": (rng.normal(0, 0.1, (2, t.size)), 44100),
        "bursts 44.1 kHz": (speechlike[None, :], 44100),
        "half silent 48 kHz (gating)": (np.where(np.arange(96000) < 48000, 0.3 * np.sin(np.arange(96000) * 0.05), 0.0)[None, :], 48000),
    }
    for name, (wave, rate) in signals.items():
        wave = wave.astype(np.float32)
        theirs = float(torchaudio.functional.loudness(torch.from_numpy(wave), rate))
        assert loudness_lufs(Audio(wave, rate)) == pytest.approx(theirs, abs=0.1), name
    tone = np.sin(2 * np.pi * 440 * t)[None, :].astype(np.float32)
    ours = resample(tone, 44100, 16000)
    theirs = torchaudio.functional.resample(torch.from_numpy(tone), 44100, 16000).numpy()
    assert ours.shape == theirs.shape == (1, 64000)
    assert np.abs(ours - theirs)[:, 100:-100].max() < 1e-3


@pytest.mark.parametrize(
    "name,data",
    [("truncated", audio("flac")[:100]), ("empty", b""), ("garbage", bytes(range(256)) * 8)],
)
def test_broken_audio_is_an_error_with_a_reason(name, data):
    row = _info(data, "flac")
    assert row["error"].startswith("decode_error: ")
    assert "0x" not in row["error"] and ".cpp" not in row["error"]


def test_audio_info_measures_loudness_silence_and_clipping():
    row = _info(audio("wav", seconds=2.0))
    assert (row["sample_rate"], row["channels"], row["duration_s"]) == (16000, 1, 2.0)
    assert row["loudness_lufs"] == pytest.approx(TONE_LUFS, abs=0.2)
    assert row["silence_fraction"] == 0 and row["clipping_fraction"] == 0

    t = np.arange(32000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    half_silent = np.where(t < 1.0, tone, 0.0)
    row = _info(wav_bytes(half_silent))
    assert row["silence_fraction"] == pytest.approx(0.5, abs=0.02)
    clipped = np.clip(2.0 * np.sin(2 * np.pi * 440 * t), -1, 1)  # |2 sin| >= 1 for 2/3 of the time
    row = _info(wav_bytes(clipped))
    assert row["clipping_fraction"] == pytest.approx(2 / 3, abs=0.02)
    assert _info(wav_bytes(np.zeros(16000)))["loudness_lufs"] is None  # silence has no loudness


def test_pcm_hash_matches_the_same_sound_in_another_container():
    wav = audio("wav", channels=2)
    from synthetic_av import transcode_audio

    flac = transcode_audio(wav, "flac")
    mp3 = audio("mp3", channels=2)
    assert _info(wav)["audio_pcm_sha256"] == _info(flac, "flac")["audio_pcm_sha256"]
    assert _info(wav)["audio_pcm_sha256"] != _info(mp3, "mp3")["audio_pcm_sha256"]  # lossy: other samples
    louder = audio("wav", channels=2, source="sine=frequency=441")
    assert _info(wav)["audio_pcm_sha256"] != _info(louder)["audio_pcm_sha256"]


def test_audio_run_end_to_end(client, tmp_path):
    from synthetic_av import transcode_audio

    wav = audio("wav", seconds=2.0, source="sine=frequency=330")
    samples = [(f"{fmt}", {fmt: audio(fmt, seconds=2.0, source=f"sine=frequency={200 + 100 * i}"), "txt": b"a tone"})
               for i, fmt in enumerate(AUDIO_FORMATS)]
    samples += [
        ("wav_original", {"wav": wav, "txt": b"a tone"}),
        ("flac_same_pcm", {"flac": transcode_audio(wav, "flac"), "txt": b"a tone"}),
        ("float_stereo", {"wav": audio("wav", seconds=2.0, channels=2, codec="pcm_f32le"), "txt": b"x"}),
        ("too_short", {"ogg": audio("ogg", seconds=0.5), "txt": b"a tone"}),
        ("silent", {"wav": wav_bytes(np.zeros(32000)), "txt": b"nothing"}),
        ("truncated", {"flac": audio("flac")[:100], "txt": b"a tone"}),
        ("empty", {"wav": b"", "txt": b"a tone"}),
    ]
    shard = make_shard(tmp_path / "audio.tar", samples)
    recipe = mmcurate.Recipe.from_dict(
        {
            "name": "audio-test",
            "modalities": {"audio": ["flac", "wav", "mp3", "ogg", "opus", "m4a"], "text": ["txt"]},
            "steps": [
                {"annotate": "audio_info"},
                {"id": "length", "filter": "duration_s >= 1 and duration_s <= 30"},
                {"id": "quality", "filter": "silence_fraction <= 0.5 and loudness_lufs >= -45"},
                {"dedup": "exact", "column": "audio_pcm_sha256"},
            ],
        }
    )
    result = mmcurate.curate(str(shard), recipe, tmp_path / "run", client=client, quiet=True)
    decided = {r["key"]: (r["step"], r["reason"]) for r in mmcurate.open_run(result.out).decisions.to_pylist()}
    assert result.samples_in == len(samples) == result.kept + result.dropped
    assert sorted(k for k, (step, _) in decided.items() if step is None) == sorted(AUDIO_FORMATS + ["wav_original", "float_stereo"])
    assert decided["flac_same_pcm"] == ("dedup_exact", "duplicate_of:wav_original")
    assert decided["too_short"] == ("length", "fails duration_s >= 1")
    assert decided["silent"][0] == "quality"
    assert decided["truncated"][0] == "audio_info" and decided["truncated"][1].startswith("decode_error: ")
    assert decided["empty"] == ("audio_info", "decode_error: empty audio member")


def test_audio_demo_shard_drops_exactly_what_was_planted(client, tmp_path):
    planted, steps, _ = run_demo_shard(client, tmp_path, "audio", "audio-default")
    expected = {
        "normal": None, "float_stereo": None, "same_pcm": "dedup_exact", "copy": "dedup_exact",
        "silent": "audio_quality", "clipped": "audio_quality", "too_short": "audio_length",
        "too_long": "audio_length", "truncated": "audio_info", "garbage": "audio_info", "empty": "audio_info",
    }
    assert steps == {k: expected[kind] for k, kind in planted.items()}
