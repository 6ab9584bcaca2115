"""mmcurate installs with pip alone: its decoders load the FFmpeg bundled in the ``av`` (and
``decord``) wheels, never the system's libraries or the ``ffmpeg`` command, and never need
torchaudio or torchcodec. (.ci/compat checks the built wheel in fresh training environments.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os, sys
from av_media import audio, video
from mmcurate.decode.audio import decode_audio
from mmcurate.decode.video import FrameRequest, sample_frames

assert decode_audio(audio("mp3"), sample_rate=8000).sample_rate == 8000
for decoder in ("auto", "pyav"):
    os.environ["MMCURATE_VIDEO_DECODER"] = decoder
    assert len(sample_frames(video("vp9", "webm"), FrameRequest(n=2)).frames) == 2
roots = {os.path.dirname(os.path.dirname(sys.modules[m].__file__)) for m in ("av", "decord") if m in sys.modules}
print("ROOTS", *sorted(roots), sep="\\n")
print("LIBS", *sorted({line.split()[-1] for line in open("/proc/self/maps") if "libav" in line}), sep="\\n")
print("MODULES", *[m for m in ("torchaudio", "torchcodec") if m in sys.modules], sep="\\n")
"""


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line in ("ROOTS", "LIBS", "MODULES"):
            key = line
            out[key] = []
        elif out:
            out[key].append(line)
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process's memory map (/proc/self/maps)")
def test_decoding_loads_ffmpeg_from_the_wheels_and_needs_no_ffmpeg_command():
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no ffmpeg command to be found
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _sections(proc.stdout)
    assert got["LIBS"], "no FFmpeg library was loaded"
    outside = [lib for lib in got["LIBS"] if not any(lib.startswith(root + os.sep) for root in got["ROOTS"])]
    assert not outside, f"FFmpeg libraries from outside the installed wheels: {outside}"
    assert got["MODULES"] == []


def _requirements():
    import tomllib

    from packaging.requirements import Requirement

    from conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(text).name.lower(): Requirement(text) for text in project["dependencies"]}, project


PLATFORMS = {  # the environment markers pip sees on each platform
    "Linux x86_64": {"sys_platform": "linux", "platform_machine": "x86_64"},
    "Windows x86_64": {"sys_platform": "win32", "platform_machine": "AMD64"},
    "Linux aarch64": {"sys_platform": "linux", "platform_machine": "aarch64"},
    "macOS arm64": {"sys_platform": "darwin", "platform_machine": "arm64"},
    "macOS x86_64": {"sys_platform": "darwin", "platform_machine": "x86_64"},
}


def test_dependencies_are_ranges_and_decord_goes_only_where_it_has_wheels():
    requirements, project = _requirements()
    assert not [str(r) for r in requirements.values() if any(spec.operator in ("==", "===", "~=") for spec in r.specifier)]
    assert str(requirements["torch"].specifier) == ">=2.11" and str(requirements["torchvision"].specifier) == ">=0.26"
    assert "torchaudio" not in requirements and "torchcodec" not in requirements
    assert "av" in requirements and requirements["av"].marker is None  # the fallback decoder, everywhere
    decord = requirements["decord"].marker
    assert {name: decord.evaluate(env) for name, env in PLATFORMS.items()} == {
        "Linux x86_64": True, "Windows x86_64": True, "Linux aarch64": False, "macOS arm64": False, "macOS x86_64": False,
    }
    assert project["requires-python"] == ">=3.11"
    assert {c.rsplit(" ", 1)[-1] for c in project["classifiers"] if c.startswith("Programming Language :: Python :: 3.")} == {"3.11", "3.12", "3.13"}
