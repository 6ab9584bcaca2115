"""Build a small hostile corpus and curate it, printing each worker's peak memory and every drop reason.

The corpus (all made here, in pure Python and Pillow, no FFmpeg needed):

* ``bomb.tar.gz``: a few small image-text samples around one member of ``--bomb-mib`` MiB of
  zeros (a few MB compressed); the reader must stream past it, not hold it.
* ``flat.tar``: ``--flat`` flat 7000x7000 PNGs (about 150 KB each, 196 MB each decoded).
* ``audio.tar``: a 30-minute silent FLAC (about 300 KB), a WAV whose header claims an hour,
  and a 1 s tone.
* ``corrupt.tar``: PostScript and a PNG inside ``.jpg`` members, truncated and
  header-damaged JPEGs and PNGs, headers claiming 100000x100000 and 30000x30000 pixels.

Then the ``near-dup`` recipe over the image shards and ``audio-default`` over the audio shard,
each on a fresh LocalCluster (one worker process, one thread), and for each: the peak
resident memory of the worker (``VmHWM``) and of its decode children, and the drops.

    PYTHONPATH=. python scripts/hostile_corpus.py --out /tmp/hostile
"""

from __future__ import annotations

import argparse
import io
import shutil
import struct
import tarfile
import wave
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["bomb_shard", "corrupt_images", "flat_png", "silent_flac", "wav_claiming"]


# --------------------------------------------------------------------------- media


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number: UTF-8's variable-length coding, extended to 36 bits."""
    if n < 0x80:
        return bytes([n])
    count = 2
    while n >= 1 << (5 * count + 1):
        count += 1
    out = [0x80 | ((n >> (6 * i)) & 0x3F) for i in range(count - 1)][::-1]
    lead = ((0xFF << (8 - count)) & 0xFF) | (n >> (6 * (count - 1)))
    return bytes([lead, *out])


def silent_flac(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    """A valid FLAC of ``seconds`` of digital silence: 4096-sample frames of CONSTANT subframes
    (16 bytes per frame in stereo, so 30 minutes is about 300 KB)."""
    block = 4096
    frames = max(1, round(seconds * rate / block))
    info = struct.pack(">HH", block, block) + b"\0" * 6  # block sizes; frame sizes unknown
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | frames * block).to_bytes(8, "big") + b"\0" * 16
    out = [b"fLaC", bytes([0x80, 0, 0, len(info)]), info]  # the last (only) metadata block: STREAMINFO
    # 4096-sample blocks (0b1100), rate from STREAMINFO (0b0000), independent channels, 16 bits
    fixed = bytes([0xFF, 0xF8, 0xC0, ((channels - 1) << 4) | 0x08])
    for number in range(frames):
        header = fixed + _utf8_number(number)
        frame = header + bytes([_crc8(header)]) + b"\0\0\0" * channels  # CONSTANT subframe, value 0
        out.append(frame + _crc16(frame).to_bytes(2, "big"))
    return b"".join(out)


def wav_claiming(seconds: float, rate: int = 48000, channels: int = 2, actual_s: float = 0.1) -> bytes:
    """A 16-bit WAV whose header claims ``seconds`` but that holds only ``actual_s`` of silence."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0" * (2 * channels * int(rate * actual_s)))
    data = bytearray(buf.getvalue())
    claimed = 2 * channels * int(rate * seconds)
    struct.pack_into("<I", data, 4, min(claimed + 36, 0xFFFFFFFE))
    struct.pack_into("<I", data, 40, min(claimed, 0xFFFFFFFE))  # the data chunk's size
    return bytes(data)


def flat_png(width: int = 7000, height: int = 7000, shade: int = 128) -> bytes:
    """A flat RGB PNG: about 150 KB for 7000x7000, 196 MB once Pillow decodes it."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (shade, shade, shade)).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` with one tiny IDAT (a decompression-bomb header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 0 0 moveto 100 100 lineto stroke\nshowpage\n%%EOF\n"
"""An EPS file: in a ``.jpg`` member it must never reach Pillow's EPS plugin (nor Ghostscript)."""


def corrupt_images() -> dict[str, bytes]:
    """Broken and hostile image members by name (each stored as ``NAME.jpg``)."""
    good, png = _jpeg(), io.BytesIO()
    Image.new("RGB", (200, 150), (10, 200, 30)).save(png, format="PNG")
    png_bytes = png.getvalue()
    bad_marker = bytearray(good)
    bad_marker[2:4] = b"\xff\x01"
    return {
        "postscript": POSTSCRIPT,
        "png_in_jpg": png_bytes,
        "truncated_jpeg": good[: len(good) // 3],
        "bad_jpeg_marker": bytes(bad_marker),
        "truncated_png": png_bytes[: len(png_bytes) // 2],
        "png_bad_crc": png_bytes[:29] + b"\0\0\0\0" + png_bytes[33:],
        "png_claims_100000x100000": _png_claiming(100_000, 100_000),
        "png_claims_30000x30000": _png_claiming(30_000, 30_000),
        "zero_bytes": b"",
        "random_bytes": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }


# --------------------------------------------------------------------------- shards


class _Zeros(io.RawIOBase):
    """``size`` zero bytes as a stream (a bomb member without holding it)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def bomb_shard(path: Path, member_bytes: int, mode: str = "w:gz") -> Path:
    """A shard of three image-text samples with ``b/000001.bin`` (``member_bytes`` zeros) in the middle."""
    with tarfile.open(path, mode) as tar:
        _add(tar, "b/000000.jpg", _jpeg(seed=0))
        _add(tar, "b/000000.txt", b"a photo")
        info = tarfile.TarInfo("b/000001.bin")
        info.size = member_bytes
        tar.addfile(info, io.BufferedReader(_Zeros(member_bytes), 1 << 20))
        _add(tar, "b/000001.txt", b"a bomb")
        _add(tar, "b/000002.jpg", _jpeg(seed=2))
        _add(tar, "b/000002.txt", b"another photo")
    return path


def _shard(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                _add(tar, f"{key}.{ext}", data)
    return path


def build(root: Path, bomb_mib: int, flat: int) -> tuple[list[Path], list[Path]]:
    """Write the corpus under ``root``: (image shards, audio shards)."""
    root.mkdir(parents=True, exist_ok=True)
    images = [
        bomb_shard(root / "bomb.tar.gz", bomb_mib << 20),
        _shard(root / "flat.tar", {f"f/{i:06d}": {"png": flat_png(shade=40 + 20 * i), "txt": b"flat"} for i in range(flat)}),
        _shard(root / "corrupt.tar", {f"c/{name}": {"jpg": data, "txt": b"broken"} for name, data in corrupt_images().items()}),
    ]
    tone = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 8000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone.tobytes())
    audio = {
        "a/silent_30min": {"flac": silent_flac(1800), "txt": b"silence"},
        "a/wav_claims_1h": {"wav": wav_claiming(3600), "txt": b"a lie"},
        "a/tone_1s": {"wav": buf.getvalue(), "txt": b"a tone"},
    }
    return images, [_shard(root / "audio.tar", audio)]


# --------------------------------------------------------------------------- measure


def _peaks() -> dict[str, int]:
    """Peak RSS (bytes) of this worker process and of each of its decode children."""

    def hwm(status: str) -> int:
        for line in Path(status).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) << 10
        return 0

    import os

    out = {"worker": hwm("/proc/self/status")}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children = task / "children"
        for pid in children.read_text().split() if children.exists() else []:
            try:
                out[f"decode child {pid}"] = hwm(f"/proc/{pid}/status")
            except OSError:
                pass
    return out


def run(inputs: list[Path], recipe: str, out: Path) -> None:
    import pyarrow.parquet as pq
    from dask.distributed import Client, LocalCluster

    import mmcurate

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        result = mmcurate.curate([str(p) for p in inputs], recipe, out, client=client, quiet=True, overwrite=True)
        peaks = client.run(_peaks)
    print(f"\n== {recipe}: {result.samples_in} samples in, {result.kept} kept, {result.dropped} dropped")
    for worker, found in peaks.items():
        for who, rss in found.items():
            print(f"   peak RSS {who:<20} {rss / 2**20:8.0f} MiB   ({worker})")
    table = pq.read_table(result.decisions_path).to_pylist()
    for row in table:
        if not row["kept"]:
            print(f"   dropped {row['key']:<32} {row['step']}: {row['reason']}")
    print("   " + ", ".join(f"{step}: {n}" for step, n in Counter(r["step"] for r in table if not r["kept"]).items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/hostile-corpus"))
    parser.add_argument("--bomb-mib", type=int, default=1024, help="size of the zero member in bomb.tar.gz (MiB)")
    parser.add_argument("--flat", type=int, default=8, help="flat 7000x7000 PNGs in flat.tar")
    parser.add_argument("--skip-audio", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    images, audio = build(args.out / "corpus", args.bomb_mib, args.flat)
    for shard in images + audio:
        print(f"{shard.name:<14} {shard.stat().st_size / 2**20:7.2f} MB")
    run(images, "near-dup", args.out / "near-dup")
    if not args.skip_audio:
        run(audio, "audio-default", args.out / "audio")


if __name__ == "__main__":
    main()
