"""Benchmark: how well pHash near-duplicate dedup finds edited copies of real photographs, and what it wrongly matches.

Ground truth comes from the photographs bundled with scikit-image (``skimage.data``; public
domain or permissively licensed, see ``skimage/data/README.txt``). Only images that load
offline from the installed package are used; ones that need a pooch download are skipped and
listed. Synthetic graphics (checkerboard, horse, logo, phantoms, blobs) and the 25x25 LFW faces
are left out; ``cat`` is the same array as ``chelsea`` and is dropped as identical; of
``stereo_motorcycle`` only the left view is used (the right view is the same scene seen from a
few centimetres away, a true near-duplicate with no ground-truth label). To reach
``--min-originals`` distinct originals, random crops are added from the largest photographs:
one random crop (70-95% of the cell's sides) inside each cell of a 2x2 grid, so crops of one
photograph never overlap and each covers at most a quarter of it. Crops count as distinct
originals (a crop matched to its parent photograph counts as a false positive).

Each original gets 20 transformed copies: resize 50% and 25% (LANCZOS), JPEG quality 20,
brightness x1.2 then colour x1.3 (``ImageEnhance``), grayscale, horizontal flip; letterbox
(bars above and below) and pillarbox (bars left and right), each bar pair a quarter of the new
frame, in black and in white; rotation by 2, 5 and 10 degrees (bicubic, same canvas, black
corners) and by 90 degrees (whole picture); a text overlay across the middle (Pillow's
default font, ~90% of the width, white with a black outline), a dark caption banner over the
bottom sixth, an opaque logo in the bottom-right corner; centre crops keeping 90, 80 and 70%
of the area. Hard negatives: of each photograph, two views a quarter of the width apart (its
left and right 75%), each its own origin. Everything is stored as JPEG (quality 90; the
JPEG-20 copy at quality 20), as ``KEY.jpg`` + ``KEY.txt`` samples in ``--shards`` WebDataset
tars (in shuffled order).

Then, for each D in ``--d`` (default 4, the recipes' default):

* **mmcurate fast**: ``mmcurate.curate`` with ``image_info`` and the ``phash`` annotate and
  dedup steps of ``filters/near-dup.yaml`` (fast mode: reduced decode, borders trimmed,
  mirror, turned variants, region hashes; two dedup steps, each set to D);
* **mmcurate exact**: ``phash`` with ``mode: exact`` and ``mirror: true`` (imagehash's
  values), one ``dedup: phash`` step with ``mirror: true`` (the recipe before fast mode).
  Each method runs into its own run directory with ``overwrite=True``: after the first D the
  stored hashes are reused (asserted). Clusters come from the decisions (a dropped sample
  joins the one its reason names), so a copy can be found through a third image.
* **imagehash** brute force: ``imagehash.phash`` of every decoded JPEG, all pairs,
  ``hamming <= D``; plain, and "+mirror", where a pair also matches when
  ``imagehash.phash(ImageOps.mirror(img))`` of either side is within D of the other.
  Pairwise: no transitive closure.

Metrics (a "predicted pair" is two images in one mmcurate cluster, or within D for imagehash):

* recall per transform: share of originals whose transformed copy is paired with it;
* false pairs per transform: predicted pairs of a copy of that transform with an image of
  another origin;
* precision over all predicted pairs; false positives among pairs of different originals,
  among the hard negatives, and among all images.

It also checks that the exact mode's stored ``phash`` equals imagehash's.

Needs scikit-image (``pip install scikit-image``) and imagehash. Runs in well under a minute
on 2 cores. Run from the repository root::

    python scripts/bench_dedup_accuracy.py                 # D = 4
    python scripts/bench_dedup_accuracy.py --d 4 8 --min-originals 40

Writes shards, the mmcurate run and ``results.json`` under ``bench-out/dedup-accuracy/``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import jpeg_bytes, write_tar  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "bench-out" / "dedup-accuracy"

# skimage.data photographs, in a fixed order. Names missing from the installed version, or
# needing a download, are skipped. "cat" is chelsea again (removed as identical).
PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "cat", "rocket", "coins", "moon", "page", "text",
    "immunohistochemistry", "hubble_deep_field", "retina", "stereo_motorcycle", "grass", "gravel",
    "brick", "colorwheel", "clock", "cell", "microaneurysms", "eagle", "lily", "kidney", "skin",
    "human_mitosis",
)

JPEG_QUALITY = 90
OVERLAY_TEXT = "SAMPLE WATERMARK  (c) 2024 mmcurate"


# --------------------------------------------------------------------------- originals


def _to_image(array: np.ndarray) -> Image.Image:
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) / (hi - lo) * 255).round().astype(np.uint8)
    if a.ndim == 2:
        return Image.fromarray(a, "L")
    if a.shape[2] == 4:
        return Image.fromarray(a, "RGBA").convert("RGB")
    return Image.fromarray(a[:, :, :3], "RGB")


def load_photos() -> tuple[list[tuple[str, Image.Image]], dict[str, str]]:
    """Photographs that load offline, minus identical arrays; and {name: why skipped}."""
    import skimage.data

    photos: list[tuple[str, Image.Image]] = []
    skipped: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in PHOTOS:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            skipped[name] = "not in this scikit-image version"
            continue
        try:
            data = loader()
        except Exception as exc:  # pooch missing / no network / not bundled
            skipped[name] = f"does not load offline ({type(exc).__name__})"
            continue
        if name == "stereo_motorcycle":
            data, name = data[0], "motorcycle_left"
            skipped["motorcycle_right"] = "stereo twin of motorcycle_left (a true near-duplicate, unlabelled)"
        img = _to_image(data)
        digest = hashlib.sha256(img.tobytes() + repr(img.size).encode()).hexdigest()
        if digest in seen:
            skipped[name] = f"identical to {seen[digest]}"
            continue
        seen[digest] = name
        photos.append((name, img))
    return photos, skipped


def add_crops(photos: list[tuple[str, Image.Image]], minimum: int, rng: np.random.Generator) -> list[tuple[str, Image.Image]]:
    """Random non-overlapping crops (one per 2x2 grid cell) of the largest photos until ``minimum``."""
    crops: list[tuple[str, Image.Image]] = []
    by_area = sorted(photos, key=lambda p: -p[1].size[0] * p[1].size[1])
    for name, img in by_area:
        if len(photos) + len(crops) >= minimum:
            break
        w, h = img.size
        cw, ch = w // 2, h // 2
        for k, (gx, gy) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
            if len(photos) + len(crops) >= minimum:
                break
            sw, sh = int(cw * rng.uniform(0.7, 0.95)), int(ch * rng.uniform(0.7, 0.95))
            x = gx * cw + int(rng.integers(0, cw - sw + 1))
            y = gy * ch + int(rng.integers(0, ch - sh + 1))
            crops.append((f"{name}_crop{k}", img.crop((x, y, x + sw, y + sh))))
    return crops


# --------------------------------------------------------------------------- transforms


def _resize(scale: float) -> Callable[[Image.Image], Image.Image]:
    def fn(img: Image.Image) -> Image.Image:
        w, h = img.size
        return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)

    return fn


def _centre_crop(share: float) -> Callable[[Image.Image], Image.Image]:
    def fn(img: Image.Image) -> Image.Image:
        w, h = img.size
        cw, ch = round(w * share), round(h * share)
        x, y = (w - cw) // 2, (h - ch) // 2
        return img.crop((x, y, x + cw, y + ch))

    return fn


def _enhance(img: Image.Image) -> Image.Image:
    rgb = img.convert("RGB")
    return ImageEnhance.Color(ImageEnhance.Brightness(rgb).enhance(1.2)).enhance(1.3)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable default font (Pillow >= 10.1 with FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_overlay(img: Image.Image) -> Image.Image:
    out = img.convert("RGB")
    w, h = out.size
    draw = ImageDraw.Draw(out)
    size = max(8, h // 10)
    font = _font(size)
    length = draw.textlength(OVERLAY_TEXT, font=font)
    if length > 0 and isinstance(font, ImageFont.FreeTypeFont):
        font = _font(max(6, int(size * 0.9 * w / length)))  # span ~90% of the width
    left, top, right, bottom = draw.textbbox((0, 0), OVERLAY_TEXT, font=font)
    x, y = (w - (right - left)) / 2 - left, (h - (bottom - top)) / 2 - top
    stroke = max(1, (bottom - top) // 12)
    draw.text((x, y), OVERLAY_TEXT, font=font, fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0))
    return out


def _pad(sides: str, colour: int) -> Callable[[Image.Image], Image.Image]:
    """Bars of ``colour`` taking a quarter of the new frame: above and below (``sides="tb"``,
    letterbox, as a 2.39:1 film in 16:9) or left and right (``"lr"``, pillarbox, as 4:3 in 16:9)."""

    def fn(img: Image.Image) -> Image.Image:
        w, h = img.size
        W, H = (w, round(h * 4 / 3)) if sides == "tb" else (round(w * 4 / 3), h)
        canvas = Image.new("RGB", (W, H), (colour,) * 3)
        canvas.paste(img.convert("RGB"), ((W - w) // 2, (H - h) // 2))
        return canvas

    return fn


def _rotate(angle: float) -> Callable[[Image.Image], Image.Image]:
    """Turned counter-clockwise on the same canvas (black corners), as ``Image.rotate``; right
    angles turn the whole picture."""
    return lambda img: img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=angle % 90 == 0)


def _crop_area(share: float) -> Callable[[Image.Image], Image.Image]:
    """Centre crop keeping ``share`` of the area (both sides scaled by its square root)."""
    return _centre_crop(share**0.5)


def _banner(img: Image.Image) -> Image.Image:
    """A dark caption bar over the bottom sixth with white text (a reposted meme/caption)."""
    out = img.convert("RGB")
    w, h = out.size
    draw = ImageDraw.Draw(out)
    bar = max(8, h // 6)
    draw.rectangle((0, h - bar, w, h), fill=(20, 20, 20))
    font = _font(max(6, bar // 2))
    draw.text((w // 20, h - bar + bar // 4), "shared via example.com", font=font, fill=(255, 255, 255))
    return out


def _logo(img: Image.Image) -> Image.Image:
    """An opaque coloured logo (a sixth of the width) in the bottom-right corner."""
    out = img.convert("RGB")
    w, h = out.size
    side = max(8, min(w, h) // 6)
    x, y = w - side - w // 40, h - side - h // 40
    draw = ImageDraw.Draw(out)
    draw.ellipse((x, y, x + side, y + side), fill=(230, 40, 40), outline=(255, 255, 255), width=max(1, side // 12))
    draw.text((x + side // 4, y + side // 3), "TV", font=_font(max(6, side // 3)), fill=(255, 255, 255))
    return out


# name -> (transform, JPEG quality of the stored copy)
TRANSFORMS: dict[str, tuple[Callable[[Image.Image], Image.Image], int]] = {
    "resize_50": (_resize(0.5), JPEG_QUALITY),
    "resize_25": (_resize(0.25), JPEG_QUALITY),
    "jpeg_q20": (lambda img: img, 20),
    "bright_colour": (_enhance, JPEG_QUALITY),
    "grayscale": (lambda img: img.convert("L"), JPEG_QUALITY),
    "hflip": (ImageOps.mirror, JPEG_QUALITY),
    "letterbox_black": (_pad("tb", 0), JPEG_QUALITY),
    "letterbox_white": (_pad("tb", 255), JPEG_QUALITY),
    "pillarbox_black": (_pad("lr", 0), JPEG_QUALITY),
    "pillarbox_white": (_pad("lr", 255), JPEG_QUALITY),
    "rotate_2": (_rotate(2), JPEG_QUALITY),
    "rotate_5": (_rotate(5), JPEG_QUALITY),
    "rotate_10": (_rotate(10), JPEG_QUALITY),
    "rotate_90": (_rotate(90), JPEG_QUALITY),
    "text_overlay": (_text_overlay, JPEG_QUALITY),
    "text_banner": (_banner, JPEG_QUALITY),
    "corner_logo": (_logo, JPEG_QUALITY),
    "crop_90": (_crop_area(0.9), JPEG_QUALITY),
    "crop_80": (_crop_area(0.8), JPEG_QUALITY),
    "crop_70": (_crop_area(0.7), JPEG_QUALITY),
}


# --------------------------------------------------------------------------- dataset


HARD_NEGATIVE = "hard_negative"
MMCURATE_METHODS = ("fast", "exact")


def hard_negatives(photos: list[tuple[str, Image.Image]]) -> list[tuple[str, Image.Image]]:
    """Similar scenes that are not copies: of each photograph, two views a quarter of the width
    apart (the left and right 75%, as a camera panning or two frames of one shot seconds apart).
    Each view is its own origin, with no original beside it."""
    views = []
    for name, img in photos:
        w, h = img.size
        cw = round(w * 0.75)
        views += [(f"{name}_view_left", img.crop((0, 0, cw, h))), (f"{name}_view_right", img.crop((w - cw, 0, w, h)))]
    return views


def build_dataset(originals: list[tuple[str, Image.Image]], negatives: list[tuple[str, Image.Image]], shard_dir: Path,
                  n_shards: int, rng: np.random.Generator) -> dict[str, Any]:
    """Write the shards; return per image (in a fixed order) key, origin index, transform, JPEG bytes."""
    keys: list[str] = []
    origin: list[int] = []
    transform: list[str] = []
    blobs: list[bytes] = []
    names = [name for name, _ in originals + negatives]
    for k, (name, img) in enumerate(negatives):
        keys.append(f"n{k:03d}_{name}")
        origin.append(len(originals) + k)
        transform.append(HARD_NEGATIVE)
        blobs.append(jpeg_bytes(img, JPEG_QUALITY))
    for i, (name, img) in enumerate(originals):
        keys.append(f"o{i:03d}_original")
        origin.append(i)
        transform.append("original")
        blobs.append(jpeg_bytes(img, JPEG_QUALITY))
        for t, (fn, quality) in TRANSFORMS.items():
            keys.append(f"o{i:03d}_{t}")
            origin.append(i)
            transform.append(t)
            blobs.append(jpeg_bytes(fn(img), quality))
    order = rng.permutation(len(keys))
    shard_dir.mkdir(parents=True, exist_ok=True)
    for old in shard_dir.glob("*.tar"):
        old.unlink()
    paths = []
    for s, rows in enumerate(np.array_split(order, n_shards)):
        path = shard_dir / f"accuracy-{s:03d}.tar"
        samples = [(keys[r], {"jpg": blobs[r], "txt": f"{names[origin[r]]} {transform[r]}".encode()}) for r in rows]
        write_tar(path, samples)
        paths.append(path)
    photo = {name: i for i, name in enumerate(names) if "_crop" not in name and "_view_" not in name}
    cut_from = [photo[names[o].split("_crop")[0].split("_view_")[0]] for o in origin]
    return {"keys": keys, "origin": np.array(origin), "transform": np.array(transform), "source": np.array(cut_from),
            "blobs": blobs, "shards": paths}


def imagehash_hashes(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``imagehash.phash`` of each decoded JPEG and of its mirror image, as uint64."""
    import imagehash

    plain = np.empty(len(blobs), np.uint64)
    mirror = np.empty(len(blobs), np.uint64)
    for i, blob in enumerate(blobs):
        img = Image.open(io.BytesIO(blob))
        img.load()
        plain[i] = int(str(imagehash.phash(img)), 16)
        mirror[i] = int(str(imagehash.phash(ImageOps.mirror(img))), 16)
    return plain, mirror


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x.view(np.uint8).reshape(x.shape + (8,)), axis=-1).sum(axis=-1)


def distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _popcount(a[:, None] ^ b[None, :])


def _components(n: int, adjacency: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member) of each node."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(csr_matrix(adjacency), directed=False)
    smallest = {}
    for i, lab in enumerate(labels):
        smallest.setdefault(lab, i)
    return np.array([smallest[lab] for lab in labels])


# --------------------------------------------------------------------------- metrics


def evaluate(pred: np.ndarray, origin: np.ndarray, transform: np.ndarray, source: np.ndarray) -> dict[str, Any]:
    """Metrics of the symmetric boolean "predicted pair" matrix ``pred`` (diagonal ignored).

    Pairs of different origins cut from one photograph (a random crop or a view and the
    photograph, or a crop and a view of it: real crops of each other) are left out, neither
    right nor wrong, except the pairs of a photograph's two views (the hard negatives)."""
    n = len(origin)
    hard = transform == HARD_NEGATIVE
    same = origin[:, None] == origin[None, :]
    cut = ~same & (source[:, None] == source[None, :]) & ~(hard[:, None] & hard[None, :])
    upper = np.triu(np.ones((n, n), bool), 1) & ~cut
    is_orig = transform == "original"
    pos = pred & upper
    out: dict[str, Any] = {}
    tp = int((pos & same).sum())
    out["predicted_pairs"] = int(pos.sum())
    out["precision"] = tp / out["predicted_pairs"] if out["predicted_pairs"] else None
    out["true_pairs_found"] = tp
    out["true_pairs"] = int((same & upper).sum())
    per: dict[str, dict[str, Any]] = {}
    orig_row = {int(o): int(np.flatnonzero(is_orig & (origin == o))[0]) for o in np.unique(origin[is_orig])}
    for t in TRANSFORMS:
        rows = np.flatnonzero(transform == t)
        found = np.array([pred[orig_row[int(origin[r])], r] for r in rows])
        touching = pos & (np.isin(np.arange(n), rows)[:, None] | np.isin(np.arange(n), rows)[None, :])
        k = int(touching.sum())
        per[t] = {
            "recall": float(found.mean()),
            "found": int(found.sum()),
            "of": int(len(rows)),
            "missed": [int(origin[r]) for r in rows[~found]],
            "precision": int((touching & same).sum()) / k if k else None,
            "predicted_pairs": k,
            "false_pairs": int((touching & ~same).sum()),
        }
    out["per_transform"] = per
    out["recall_all_copies"] = float(np.mean([p["recall"] for p in per.values()]))
    diff_all = ~same & upper
    diff_orig = diff_all & is_orig[:, None] & is_orig[None, :]
    out["fp_originals"] = {"pairs": int(diff_orig.sum()), "false_positives": int((pos & diff_orig).sum())}
    out["fp_all_images"] = {"pairs": int(diff_all.sum()), "false_positives": int((pos & diff_all).sum())}
    diff_hard = diff_all & hard[:, None] & hard[None, :]
    out["fp_hard_negatives"] = {"pairs": int(diff_hard.sum()), "false_positives": int((pos & diff_hard).sum())}
    for key in ("fp_originals", "fp_all_images", "fp_hard_negatives"):
        out[key]["rate"] = out[key]["false_positives"] / out[key]["pairs"] if out[key]["pairs"] else None
    return out


# --------------------------------------------------------------------------- mmcurate


def recipe_dict(method: str) -> dict[str, Any]:
    """``fast``: the hashing and dedup steps of ``filters/near-dup.yaml`` (its defaults);
    ``exact``: imagehash-exact pHash with mirror, one dedup step (the recipe before fast mode)."""
    import mmcurate

    if method == "exact":
        steps = [{"annotate": "phash", "mode": "exact", "mirror": True},
                 {"dedup": "phash", "max_distance": 4, "mirror": True, "keep": "largest resolution"}]
    else:
        near = mmcurate.Recipe.load(REPO_ROOT / "filters" / "near-dup.yaml").to_dict()["steps"]
        steps = [st for st in near if st.get("annotate") == "phash" or st.get("dedup") == "phash"]
    return {"name": f"dedup-accuracy-{method}", "modalities": {"image": ["jpg"], "text": ["txt"]},
            "steps": [{"annotate": "image_info"}, *steps]}


def run_mmcurate(shards: list[Path], out: Path, method: str, ds: list[int], keys: list[str], workers: int) -> dict[int, dict[str, Any]]:
    """Curate with ``recipe_dict(method)`` once per D (every phash dedup step set to D); clusters
    are read from the decisions: each dropped sample joins the sample its reason names."""
    import mmcurate
    from dask.distributed import Client, LocalCluster

    recipe = mmcurate.Recipe.from_dict(recipe_dict(method), source=f"bench_dedup_accuracy {method}")
    dedup_ids = [st.id for st in recipe.steps if getattr(st, "method", None) == "phash"]
    position = {k: i for i, k in enumerate(keys)}
    results: dict[int, dict[str, Any]] = {}
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        for j, d in enumerate(ds):
            t0 = time.perf_counter()
            res = mmcurate.curate(
                [str(p) for p in shards], recipe, out / method, client=client,
                overrides=[f"{i}.max_distance={d}" for i in dedup_ids], overwrite=True, quiet=True,
            )
            seconds = time.perf_counter() - t0
            if j > 0:
                assert res.computed.get("phash") == 0, f"D={d}: phash recomputed {res.computed}"
            run = mmcurate.open_run(out / method)
            parent = np.arange(len(keys))
            by_step: dict[str, int] = {}
            for row in run.decisions.to_pylist():
                if not row["kept"]:
                    assert row["reason"].startswith("near_duplicate_of:"), row
                    parent[position[row["key"]]] = position[row["reason"].split(":", 1)[1]]
                    by_step[row["step"]] = by_step.get(row["step"], 0) + 1
            hashes = {r["key"]: r["phash"] for r in run.annotations().to_pylist()}
            results[d] = {
                "labels": _components(len(keys), _edges(parent)), "seconds": seconds,
                "phash": np.array([hashes[k] for k in keys], np.uint64),
                "computed": dict(res.computed), "kept": res.kept, "removed": res.dropped, "removed_by_step": by_step,
            }
    return results


def _edges(parent: np.ndarray) -> np.ndarray:
    """Symmetric boolean adjacency of ``row -- parent[row]``."""
    n = len(parent)
    adj = np.zeros((n, n), bool)
    adj[np.arange(n), parent] = True
    return adj | adj.T


# --------------------------------------------------------------------------- report


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for pkg in ("mmcurate", "pillow", "imagehash", "scikit-image", "numpy", "dask", "distributed"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for the method.")
    parser.add_argument("--d", type=int, nargs="+", default=[4], help="max Hamming distances (default: 4, the recipes' default)")
    parser.add_argument("--min-originals", type=int, default=32, help="add random crops of the largest photos until this many originals (default 32)")
    parser.add_argument("--shards", type=int, default=4, help="tar shards to write (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="Dask LocalCluster workers (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the crops and the sample order (default 0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)
    ds = sorted(set(args.d))

    try:
        import skimage  # noqa: F401
    except ImportError:
        print("scikit-image is needed for the ground-truth photographs: pip install scikit-image", file=sys.stderr)
        return 2
    try:
        import imagehash  # noqa: F401
    except ImportError:
        print("imagehash is needed for the brute-force comparison: pip install imagehash", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    photos, skipped = load_photos()
    crops = add_crops(photos, args.min_originals, rng)
    originals = photos + crops
    print(f"photographs used ({len(photos)}): " + ", ".join(f"{n} {im.size[0]}x{im.size[1]}" for n, im in photos))
    print("skipped: " + "; ".join(f"{n}: {why}" for n, why in skipped.items()))
    print(f"random crops added as extra distinct originals ({len(crops)}, to reach >= {args.min_originals}): "
          + ", ".join(f"{n} {im.size[0]}x{im.size[1]}" for n, im in crops))

    negatives = hard_negatives(photos)
    data = build_dataset(originals, negatives, args.out / "shards", args.shards, rng)
    keys, origin, transform, source = data["keys"], data["origin"], data["transform"], data["source"]
    n = len(keys)
    print(f"{len(originals)} originals x (1 + {len(TRANSFORMS)} transforms) + {len(negatives)} hard negatives "
          f"(two views of each photograph) = {n} images in {args.shards} shards")

    t0 = time.perf_counter()
    ih, ih_m = imagehash_hashes(data["blobs"])
    ih_seconds = time.perf_counter() - t0
    plain = distance_matrix(ih, ih)
    mirrored = np.minimum.reduce([plain, distance_matrix(ih_m, ih), distance_matrix(ih, ih_m), distance_matrix(ih_m, ih_m)])

    mm = {method: run_mmcurate(data["shards"], args.out / "run", method, ds, keys, args.workers) for method in MMCURATE_METHODS}
    exact_identical = bool(np.array_equal(mm["exact"][ds[0]]["phash"], ih))

    results: dict[str, Any] = {"per_d": {}}
    for d in ds:
        per = {f"mmcurate_{m}": evaluate(mm[m][d]["labels"][:, None] == mm[m][d]["labels"][None, :], origin, transform, source) for m in MMCURATE_METHODS}
        per["imagehash"] = evaluate(plain <= d, origin, transform, source)
        per["imagehash_mirror"] = evaluate(mirrored <= d, origin, transform, source)
        per["mmcurate_runs"] = {m: {k: mm[m][d][k] for k in ("seconds", "computed", "kept", "removed", "removed_by_step")} for m in MMCURATE_METHODS}
        results["per_d"][str(d)] = per

    # ---- print
    print()
    print(f"stored phash of the exact mode == imagehash.phash: {exact_identical}")
    methods = (("mmcurate_fast", "fast"), ("mmcurate_exact", "exact"), ("imagehash", "ih"), ("imagehash_mirror", "ih+m"))
    print("fast = mmcurate, the near-dup recipe's phash steps (fast mode: borders trimmed, mirror, turns, regions);")
    print("exact = mmcurate, imagehash-exact pHash + mirror (the recipe before); ih = imagehash brute force,")
    print("ih+m = imagehash brute force with mirrored hashes. mmcurate pairs = same cluster (transitive).")

    def table(title: str, cell: Callable[[dict[str, Any], str], str], totals: Callable[[dict[str, Any]], str] | None = None) -> None:
        print()
        print(title)
        head = f"{'transform':<16}" + "".join(f" | D={d:<2}" + "".join(f" {short:>6}" for _, short in methods) for d in ds)
        print(head)
        print("-" * len(head))
        for t in TRANSFORMS:
            print(f"{t:<16}" + "".join(" |     " + " ".join(f"{cell(results['per_d'][str(d)][k]['per_transform'][t], k):>6}" for k, _ in methods) for d in ds))
        if totals is not None:
            print(f"{'all copies':<16}" + "".join(" |     " + " ".join(f"{totals(results['per_d'][str(d)][k]):>6}" for k, _ in methods) for d in ds))

    table("Recall per transform (share of originals whose copy is matched to them)",
          lambda e, k: _pct(e["recall"]).strip(), lambda e: _pct(e["recall_all_copies"]).strip())
    table("False pairs per transform (predicted pairs of a copy of that transform with another origin's image)",
          lambda e, k: str(e["false_pairs"]))
    print()
    print("False positives at each D: pairs of different origins matched, among the originals, among the hard")
    print("negatives (two views of one scene, a quarter of the width apart), among all images; precision over all pairs")
    print(f"{'D':>3} {'method':<6} {'pairs':>6} {'precision':>9} {'originals':>11} {'hard negs':>11} {'all images':>12}  mmcurate run")
    for d in ds:
        r = results["per_d"][str(d)]
        for k, short in methods:
            e = r[k]
            fo, fh, fa = e["fp_originals"], e["fp_hard_negatives"], e["fp_all_images"]
            extra = ""
            if k.startswith("mmcurate_"):
                run = r["mmcurate_runs"][k.split("_", 1)[1]]
                extra = f"  {run['seconds']:.1f} s, {run['removed']} removed " + str(run["removed_by_step"])
            print(f"{d:>3} {short:<6} {e['predicted_pairs']:>6} {_pct(e['precision']):>9} "
                  f"{fo['false_positives']:>4}/{fo['pairs']:<6} {fh['false_positives']:>4}/{fh['pairs']:<6} "
                  f"{fa['false_positives']:>5}/{fa['pairs']:<6}{extra}")

    for d in ds:
        labels = mm["fast"][d]["labels"]
        wrong = [(keys[i], keys[j]) for i in range(n) for j in range(i + 1, n)
                 if labels[i] == labels[j] and origin[i] != origin[j] and transform[i] in ("original", HARD_NEGATIVE)
                 and transform[j] in ("original", HARD_NEGATIVE) and not (source[i] == source[j] and not transform[i] == transform[j] == HARD_NEGATIVE)]
        print(f"D={d}: fast clusters joining two originals or hard negatives: " + ("; ".join(f"{a} ~ {b}" for a, b in wrong) or "none"))
    total = time.perf_counter() - t_start
    report = {
        "originals": [{"index": i, "name": nm, "size": list(im.size), "crop": i >= len(photos)} for i, (nm, im) in enumerate(originals)],
        "skipped": skipped,
        "transforms": list(TRANSFORMS),
        "images": n,
        "shards": [str(p) for p in data["shards"]],
        "run_dir": str(args.out / "run"),
        "hard_negatives": [name for name, _ in negatives],
        "exact_mode_identical_to_imagehash": exact_identical,
        "imagehash_seconds": ih_seconds,
        "per_d": results["per_d"],
        "total_seconds": total,
        "versions": _versions(),
        "command": " ".join(["python", "scripts/bench_dedup_accuracy.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    path = args.out / "results.json"
    path.write_text(json.dumps(report, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    print()
    print(f"total {total:.1f} s; wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
