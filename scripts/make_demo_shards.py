"""Write 4 small, deterministic WebDataset demo shards with planted defects.

Output: ``demo-000000.tar`` .. ``demo-000003.tar`` (50 samples each, 200 in all, about 2.7 MB).
Keys are 9-digit, unique across the dataset: ``shard * 1000 + index`` (``000000000``,
``000001000``, ...). A normal sample has ``KEY.jpg`` (photo-like, short side 200-240 px,
long side 256-340 px, JPEG quality 80), ``KEY.txt`` (UTF-8 caption, 3-10 words) and
``KEY.json`` (img2dataset-like: key, caption, url, width, height; sorted keys).

Planted samples (41), each with exactly one defect unless noted, spread over the shards::

    kind                 s0 s1 s2 s3 total  what
    duplicate             1  2  1  2   6    .jpg bytes identical to an earlier normal sample's
                                            (3 within a shard, 3 across; 000000010 has two copies)
    near_duplicate        .  1  1  2   4    an earlier normal image upscaled (105-110%) and/or
                                            re-encoded (quality 30-60), one mirrored
    corrupt_truncated     1  .  1  .   2    valid JPEG cut to its first 40% of bytes
    corrupt_garbage       .  1  .  1   2    random bytes named .jpg (json width/height null)
    tiny                  1  1  1  1   4    short side < 48 px (e.g. 40x32)
    extreme_aspect        1  1  .  1   3    aspect > 4 (e.g. 600x125); short side also < 150
    short_side_150_199    2  1  2  1   6    valid, but fails DataComp's "short side >= 200"
    empty_caption         1  1  1  .   3    .txt of zero bytes
    whitespace_caption    1  .  1  .   2    .txt of spaces/tabs/newlines only
    non_utf8_caption      1  1  .  1   3    .txt in latin-1 with accents ("café crème brûlée")
    one_word_caption      .  1  1  .   2    .txt of a single word
    no_image              .  1  .  .   1    only .txt and .json (json width/height null)
    png                   1  .  1  .   2    valid image stored as .png instead of .jpg
    webp                  .  .  1  .   1    valid image stored as .webp instead of .jpg

Every other image has short side >= 200 px and aspect <= 3. The json "caption" holds the
intended text (also for non-UTF-8 .txt); "url" is ``https://example.com/KEY.EXT``.
Everything comes from ``numpy.random.default_rng(seed)`` (seed 0), so re-running gives
byte-identical shards for a given Pillow/libjpeg build.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import jpeg_bytes, photo_like, png_bytes, random_caption, webp_bytes, write_tar  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
NUM_SHARDS = 4
SAMPLES_PER_SHARD = 50
JPEG_QUALITY = 80

# (shard, index) -> (kind, source) ; source is (shard, index) of the original for duplicates.
PLAN: dict[tuple[int, int], tuple[str, tuple[int, int] | None]] = {
    (0, 3): ("short_side_150_199", None),
    (0, 8): ("duplicate", (0, 2)),
    (0, 12): ("corrupt_truncated", None),
    (0, 17): ("tiny", None),
    (0, 21): ("empty_caption", None),
    (0, 26): ("non_utf8_caption", None),
    (0, 31): ("png", None),
    (0, 36): ("extreme_aspect", None),
    (0, 41): ("whitespace_caption", None),
    (0, 46): ("short_side_150_199", None),
    (1, 2): ("duplicate", (0, 10)),
    (1, 7): ("corrupt_garbage", None),
    (1, 11): ("tiny", None),
    (1, 16): ("empty_caption", None),
    (1, 20): ("one_word_caption", None),
    (1, 25): ("no_image", None),
    (1, 30): ("short_side_150_199", None),
    (1, 34): ("extreme_aspect", None),
    (1, 39): ("non_utf8_caption", None),
    (1, 44): ("duplicate", (1, 40)),
    (2, 4): ("duplicate", (1, 5)),
    (2, 9): ("corrupt_truncated", None),
    (2, 13): ("tiny", None),
    (2, 18): ("short_side_150_199", None),
    (2, 22): ("whitespace_caption", None),
    (2, 27): ("one_word_caption", None),
    (2, 32): ("png", None),
    (2, 37): ("webp", None),
    (2, 42): ("empty_caption", None),
    (2, 47): ("short_side_150_199", None),
    (3, 5): ("duplicate", (3, 1)),
    (3, 10): ("corrupt_garbage", None),
    (3, 15): ("tiny", None),
    (3, 20): ("extreme_aspect", None),
    (3, 26): ("non_utf8_caption", None),
    (3, 33): ("short_side_150_199", None),
    (3, 45): ("duplicate", (0, 10)),
    (1, 48): ("near_duplicate", (0, 5)),
    (2, 45): ("near_duplicate", (1, 12)),
    (3, 40): ("near_duplicate", (2, 2)),
    (3, 48): ("near_duplicate", (3, 30)),
}
# How each near-duplicate is derived from its source: (scale, JPEG quality, mirrored).
NEAR_DUPLICATE_EDITS = {(1, 48): (1.1, 50, False), (2, 45): (1.0, 30, False), (3, 40): (1.0, 80, True), (3, 48): (1.05, 60, False)}
KINDS = (
    "duplicate", "near_duplicate", "corrupt_truncated", "corrupt_garbage", "tiny", "extreme_aspect",
    "short_side_150_199", "empty_caption", "whitespace_caption", "non_utf8_caption",
    "one_word_caption", "no_image", "png", "webp",
)
NON_UTF8_CAPTIONS = ("café crème brûlée on a plate", "a naïve façade in São Paulo", "piñata at the fiesta")
WHITESPACE_CAPTIONS = (b"   ", b" \t\n ")


def make_key(shard: int, index: int) -> str:
    return f"{shard * 1000 + index:09d}"


def _oriented(rng: np.random.Generator, long: int, short: int) -> tuple[int, int]:
    """Return (width, height): landscape with probability 0.7, else portrait."""
    return (long, short) if rng.random() < 0.7 else (short, long)


def image_size(rng: np.random.Generator, kind: str) -> tuple[int, int]:
    """Draw (width, height) for a sample of the given kind."""
    if kind == "tiny":
        return int(rng.integers(30, 48)), int(rng.integers(24, 48))
    if kind == "extreme_aspect":
        return _oriented(rng, int(rng.integers(560, 641)), int(rng.integers(110, 136)))
    if kind == "short_side_150_199":
        short = int(rng.integers(150, 200))
        return _oriented(rng, int(short * rng.uniform(1.2, 1.6)), short)
    if kind == "png":  # PNG of a noisy image is big: keep it near the minimum size
        return _oriented(rng, int(rng.integers(210, 241)), int(rng.integers(200, 206)))
    long = int(rng.integers(256, 341))
    return _oriented(rng, long, int(rng.integers(200, 241)))


def make_sample(
    rng: np.random.Generator, shard: int, index: int, jpgs: dict[tuple[int, int], tuple[bytes, int, int, str]]
) -> tuple[str, dict[str, bytes]]:
    """Build one sample; records normal samples' (jpg, width, height, caption) in ``jpgs``."""
    key = make_key(shard, index)
    kind, source = PLAN.get((shard, index), ("normal", None))
    caption = random_caption(rng, 3, 10)
    txt = caption.encode("utf-8")
    ext, image, size = "jpg", None, None

    if kind == "duplicate":
        assert source is not None and source in jpgs, f"{key}: source {source} must be an earlier normal sample"
        image, w, h, source_caption = jpgs[source]
        size = (w, h)
        while caption == source_caption:
            caption = random_caption(rng, 3, 10)
        txt = caption.encode("utf-8")
    elif kind == "near_duplicate":
        assert source is not None and source in jpgs, f"{key}: source {source} must be an earlier normal sample"
        scale, quality, mirrored = NEAR_DUPLICATE_EDITS[(shard, index)]
        img = Image.open(io.BytesIO(jpgs[source][0])).convert("RGB")
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
        if mirrored:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image, size = jpeg_bytes(img, quality), img.size
    elif kind == "corrupt_garbage":
        image = rng.bytes(int(rng.integers(2000, 6000)))
        assert not image.startswith(b"\xff\xd8"), "garbage must not look like a JPEG"
    elif kind != "no_image":
        size = image_size(rng, kind)
        img = photo_like(rng, *size)
        if kind == "png":
            ext, image = "png", png_bytes(img)
        elif kind == "webp":
            ext, image = "webp", webp_bytes(img)
        else:
            image = jpeg_bytes(img, JPEG_QUALITY)
        if kind == "corrupt_truncated":
            image = image[: int(len(image) * 0.4)]
        if kind == "normal":
            jpgs[(shard, index)] = (image, *size, caption)

    if kind == "empty_caption":
        caption, txt = "", b""
    elif kind == "whitespace_caption":
        txt = WHITESPACE_CAPTIONS[int(rng.integers(0, len(WHITESPACE_CAPTIONS)))]
        caption = txt.decode("ascii")
    elif kind == "non_utf8_caption":
        caption = NON_UTF8_CAPTIONS[int(rng.integers(0, len(NON_UTF8_CAPTIONS)))]
        txt = caption.encode("latin-1")
    elif kind == "one_word_caption":
        caption = random_caption(rng, 1, 1)
        txt = caption.encode("utf-8")

    meta = {
        "key": key,
        "caption": caption,
        "url": f"https://example.com/{key}.{ext}",
        "width": size[0] if size else None,
        "height": size[1] if size else None,
    }
    members: dict[str, bytes] = {}
    if image is not None:
        members[ext] = image
    members["txt"] = txt
    members["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return key, members


def check_shard(path: Path) -> None:
    """Re-read a written shard and assert the invariants promised in the module docstring."""
    shard = int(path.stem.split("-")[1])
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for index in range(SAMPLES_PER_SHARD):
        key = make_key(shard, index)
        kind = PLAN.get((shard, index), ("normal", None))[0]
        txt = members[f"{key}.txt"]
        meta = json.loads(members[f"{key}.json"])
        assert meta["key"] == key
        ext = {"png": "png", "webp": "webp"}.get(kind, "jpg")
        if kind == "no_image":
            assert not {f"{key}.{e}" for e in ("jpg", "png", "webp")} & members.keys()
            continue
        data = members[f"{key}.{ext}"]
        if kind == "non_utf8_caption":
            try:
                txt.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                raise AssertionError(f"{key}: caption should not be valid UTF-8")
        elif kind in ("empty_caption", "whitespace_caption"):
            assert not txt.strip()
        elif kind == "one_word_caption":
            assert len(txt.decode("utf-8").split()) == 1
        else:
            assert 3 <= len(txt.decode("utf-8").split()) <= 10
        if kind.startswith("corrupt"):
            try:
                Image.open(io.BytesIO(data)).load()
            except Exception:
                continue
            raise AssertionError(f"{key}: corrupt image decoded")
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            w, h = img.size
        assert (w, h) == (meta["width"], meta["height"])
        short, aspect = min(w, h), max(w, h) / min(w, h)
        if kind == "tiny":
            assert short < 48
        elif kind == "extreme_aspect":
            assert aspect > 4
        elif kind == "short_side_150_199":
            assert 150 <= short < 200 and aspect <= 3
        else:
            assert short >= 200 and aspect <= 3, f"{key}: {w}x{h}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "shards", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="numpy default_rng seed (default: %(default)s)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    jpgs: dict[tuple[int, int], tuple[bytes, int, int, str]] = {}
    counts: dict[str, list[int]] = {kind: [0] * NUM_SHARDS for kind in KINDS}
    planted_keys: dict[str, list[str]] = collections.defaultdict(list)
    total_bytes = 0
    image_copies: collections.Counter[bytes] = collections.Counter()
    for shard in range(NUM_SHARDS):
        samples = [make_sample(rng, shard, i, jpgs) for i in range(SAMPLES_PER_SHARD)]
        path = args.out / f"demo-{shard:06d}.tar"
        write_tar(path, samples)
        check_shard(path)
        total_bytes += path.stat().st_size
        image_copies.update(m[e] for _, m in samples for e in ("jpg", "png", "webp") if e in m)
        for (s, i), (kind, _) in PLAN.items():
            if s == shard:
                counts[kind][shard] += 1
                planted_keys[kind].append(make_key(s, i))
        print(f"wrote {path} ({path.stat().st_size:,} bytes, {len(samples)} samples)")

    n_duplicates = sum(n - 1 for n in image_copies.values())
    assert n_duplicates == sum(counts["duplicate"]), f"found {n_duplicates} duplicate images"

    print(f"\n{'planted kind':<20}" + "".join(f"{f's{s}':>4}" for s in range(NUM_SHARDS)) + "  total  keys")
    for kind in KINDS:
        row, keys = counts[kind], " ".join(sorted(planted_keys[kind]))
        print(f"{kind:<20}" + "".join(f"{c:>4}" for c in row) + f"  {sum(row):>5}  {keys}")
    n_planted = sum(sum(row) for row in counts.values())
    n_total = NUM_SHARDS * SAMPLES_PER_SHARD
    print(f"{'total planted':<20}{n_planted:>21}  of {n_total} samples; {n_total - n_planted} normal")
    print(f"total size: {total_bytes:,} bytes in {NUM_SHARDS} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
