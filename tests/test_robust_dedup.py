"""Near-duplicates that survive borders and rotations (``phash`` fast mode), and what is
never trimmed or matched: real photographs-like images, real shards, the real engine."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

import mmcurate
from conftest import REPO, make_shard
from mmcurate.steps import perceptual
from mmcurate.steps.annotators.phash import HashConfig, PHash
from mmcurate.decode.image import decode_reduced

sys.path.insert(0, str(REPO / "scripts"))
from synthetic import jpeg_bytes, photo_like  # noqa: E402


def _pad(img: Image.Image, colour: int, sides: str) -> Image.Image:
    w, h = img.size
    size = (w, h * 4 // 3) if sides == "tb" else (w * 4 // 3, h)
    canvas = Image.new("RGB", size, (colour,) * 3)
    canvas.paste(img, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


def _white_wall(rng: np.random.Generator, width: int = 640, height: int = 480) -> Image.Image:
    """A photographed white wall: near-white everywhere, lit unevenly, with plaster texture and
    sensor noise, and a small dark picture hook."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 236 + 14 * np.exp(-(((x - 0.7 * width) / width) ** 2 + ((y - 0.3 * height) / height) ** 2) * 3)
    grain = np.asarray(Image.fromarray(rng.integers(0, 256, (height // 8, width // 8), dtype=np.uint8)).resize((width, height), Image.BICUBIC), np.float32)
    wall = light + (grain - 128) / 32 + rng.normal(0, 1.5, (height, width))
    wall[200:212, 400:404] = 60
    gray = np.clip(wall, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray, gray, (gray * 0.97).astype(np.uint8)], axis=2))


def _small(img: Image.Image) -> np.ndarray:
    return np.asarray(decode_reduced(jpeg_bytes(img, 90)).gray)


@pytest.mark.parametrize(("colour", "sides"), [(0, "tb"), (255, "tb"), (0, "lr"), (128, "lr")])
def test_uniform_borders_of_any_colour_are_trimmed_to_the_picture(colour, sides):
    photo = photo_like(np.random.default_rng(1), 512, 384)
    small = _small(_pad(photo, colour, sides))
    h, w = small.shape
    left, top, right, bottom = perceptual.border_box(small)
    if sides == "tb":  # the picture fills the middle three quarters of the height
        assert (left, right) == (0, w) and abs(top - h / 8) <= 1 and abs(h - bottom - h / 8) <= 1
    else:
        assert (top, bottom) == (0, h) and abs(left - w / 8) <= 1 and abs(w - right - w / 8) <= 1


def test_real_content_is_never_trimmed():
    rng = np.random.default_rng(2)
    for img in (_white_wall(rng), photo_like(rng, 512, 384), Image.new("RGB", (300, 200), (250, 250, 250))):
        small = _small(img)
        assert perceptual.border_box(small) == (0, 0, small.shape[1], small.shape[0])


def test_letterboxed_and_turned_copies_hash_close_to_the_original():
    photo = photo_like(np.random.default_rng(3), 640, 480)
    other = photo_like(np.random.default_rng(4), 640, 480)

    def hashes(img, rotate=()):
        gray = decode_reduced(jpeg_bytes(img, 90)).gray
        return perceptual.robust_phashes([gray], rotations=rotate)[0][0]

    base = hashes(photo, rotate=(-6, -3, 3, 6, 90))
    letterboxed = hashes(_pad(photo, 255, "tb"))[0]
    turned = hashes(photo.rotate(5, resample=Image.Resampling.BICUBIC))[0]
    quarter = hashes(photo.rotate(90, expand=True))[0]
    assert perceptual.hamming(base[0], letterboxed) <= 4
    assert perceptual.hamming(base[0], turned) > 4  # the plain hash alone misses it ...
    assert perceptual.hamming(base, turned).min() <= 4  # ... a turned variant finds it
    assert perceptual.hamming(base, quarter).min() <= 4
    assert perceptual.hamming(base, hashes(other)[0]).min() > 4


def test_crops_and_captions_match_through_region_hashes_only():
    photo = photo_like(np.random.default_rng(7), 640, 480)

    def hashes(img):
        gray = decode_reduced(jpeg_bytes(img, 90)).gray
        return perceptual.robust_phashes([gray], windows=perceptual.REGIONS)[0][0]

    base = hashes(photo)
    for copy in (_crop(photo, 0.7), _banner(photo)):
        other = hashes(copy)
        assert perceptual.hamming(base[0], other[0]) > 4  # the whole-picture hashes differ ...
        assert perceptual.hamming(base[:, None], other[None, :]).min() <= 4  # ... two regions agree
    distinct = hashes(photo_like(np.random.default_rng(8), 640, 480))
    assert perceptual.hamming(base[:, None], distinct[None, :]).min() > 4


def test_quarter_turned_and_mirrored_pictures_hash_as_the_originals_variants():
    """The quarter-turn and mirror hashes come from the picture's own DCT coefficients (sign flips
    and transposes): they equal hashing the turned or mirrored picture, up to Pillow's rounding
    of the resize (at most 2 bits, most often none)."""
    rng = np.random.default_rng(11)
    grays = [decode_reduced(jpeg_bytes(photo_like(rng, 640, 480), 90)).gray for _ in range(12)]
    hashes, mirrored = perceptual.robust_phashes(grays, rotations=(90, 180, 270), mirror=True)
    distances = []
    for n, gray in enumerate(grays):
        copies = [Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(gray), k))) for k in (1, 2, 3)]
        copies.append(gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        direct = perceptual.robust_phashes(copies)[0][:, 0]
        distances += list(perceptual.hamming(direct, [*hashes[n, 1:], mirrored[n]]))
    assert max(distances) <= 2 and np.mean(np.equal(distances, 0)) >= 0.9


def test_hashes_are_those_of_the_robust_thumbnails():
    """robust_phashes never makes the thumbnails robust_thumbnails makes (for dhash), yet hashes the
    same pictures: every turn and window within rounding of the thumbnail's own hash."""
    rng = np.random.default_rng(12)
    grays = [decode_reduced(jpeg_bytes(photo_like(rng, 480, 360), 90)).gray for _ in range(16)]
    grays.append(decode_reduced(jpeg_bytes(_pad(photo_like(rng, 480, 360), 0, "tb"), 90)).gray)
    turns = (-6, 3, 90, 180)
    hashes, _ = perceptual.robust_phashes(grays, rotations=turns, windows=perceptual.REGIONS)
    thumbs = perceptual.robust_thumbnails(grays, perceptual.PHASH_SIZE, rotations=turns, windows=perceptual.REGIONS)
    assert hashes.shape == thumbs.shape[:2] == (len(grays), 1 + len(turns) + len(perceptual.REGIONS))
    from_thumbs = perceptual.phash_pixels(thumbs.reshape(-1, *perceptual.PHASH_SIZE[::-1])).reshape(hashes.shape)
    distance = perceptual.hamming(hashes, from_thumbs)
    assert distance.max() <= 4 and distance.mean() < 0.5


def test_fast_mode_reads_the_reduced_decode_and_needs_no_full_pixels():
    assert not PHash.needs_pixels_for(HashConfig()) and PHash.needs_pixels_for(HashConfig(mode="exact"))
    assert set(PHash.columns_for(HashConfig(rotate=(90,), regions=True))) == {"phash", "phash_variants", "phash_regions"}
    with pytest.raises(ValueError, match="mode"):
        HashConfig(mode="quick")
    with pytest.raises(ValueError, match="rotate and regions need mode: fast"):
        HashConfig(mode="exact", rotate=(5,))


def _banner(img: Image.Image) -> Image.Image:
    out = img.copy()
    ImageDraw.Draw(out).rectangle((0, img.height * 5 // 6, img.width, img.height), fill=(20, 20, 20))
    return out


def _logo(img: Image.Image) -> Image.Image:
    out, side = img.copy(), img.height // 6
    x, y = img.width - side - 12, img.height - side - 12
    ImageDraw.Draw(out).ellipse((x, y, x + side, y + side), fill=(230, 40, 40))
    return out


def _crop(img: Image.Image, area: float, shift: float = 0.0) -> Image.Image:
    """A crop keeping ``area`` of the picture, centred, moved right by ``shift`` of the width."""
    w, h = img.size
    cw, ch = round(w * area**0.5), round(h * area**0.5)
    x = (w - cw) // 2 + round(shift * w)
    return img.crop((x, (h - ch) // 2, x + cw, (h - ch) // 2 + ch))


@pytest.mark.timeout(180)
def test_near_dup_recipe_drops_edited_copies_and_keeps_distinct_photos(tmp_path, client):
    rng = np.random.default_rng(5)
    photo = photo_like(rng, 640, 480)
    scene = photo_like(rng, 800, 480)
    samples = {
        "original": photo,
        "letterboxed": _pad(photo, 0, "tb"),
        "pillarboxed_white": _pad(photo, 255, "lr"),
        "rotated_5": photo.rotate(5, resample=Image.Resampling.BICUBIC),
        "rotated_90": photo.rotate(90, expand=True),
        "cropped_70": _crop(photo, 0.7),
        "captioned": _banner(photo),
        "logo": _logo(photo),
        "distinct": photo_like(rng, 640, 480),
        "white_wall": _white_wall(rng),
        "distinct_2": photo_like(rng, 480, 640),
        # a hard negative: the same scene seen a quarter of the frame further right
        "scene_left": _crop(scene, 0.75 * 0.75, -0.125),
        "scene_right": _crop(scene, 0.75 * 0.75, 0.125),
    }
    shard = make_shard(tmp_path / "src" / "000000.tar", [(k, {"jpg": jpeg_bytes(img, 90), "txt": k.encode()}) for k, img in samples.items()])
    recipe = mmcurate.Recipe.load(REPO / "filters" / "near-dup.yaml")
    result = mmcurate.curate([str(shard)], recipe, tmp_path / "run", client=client, quiet=True)
    decisions = {r["key"]: r for r in mmcurate.open_run(tmp_path / "run").decisions.to_pylist()}
    dropped = {k: r["reason"] for k, r in decisions.items() if not r["kept"]}
    copies = {"original", "letterboxed", "pillarboxed_white", "rotated_5", "rotated_90", "cropped_70", "captioned", "logo"}
    (kept,) = copies - set(dropped)  # one cluster: the largest picture (a bordered one) stays
    assert set(dropped) == copies - {kept}, dropped
    assert set(dropped.values()) == {f"near_duplicate_of:{kept}"}, dropped
    assert decisions["captioned"]["step"] == "dedup_regions"  # only its region hashes match
    assert result.kept == len(samples) - len(dropped) == 6  # distinct photos, the wall, both views of the scene


def test_video_borders_of_any_colour_are_cropped_when_they_stay_in_every_frame():
    from mmcurate.steps.annotators.video_phash import static_borders

    rng = np.random.default_rng(9)
    frames = np.stack([np.asarray(photo_like(rng, 96, 72).convert("L")) for _ in range(4)])
    padded = np.full((4, 96, 128), 255, np.uint8)
    padded[:, 12:84, 16:112] = frames
    rows, cols = static_borders(padded)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (13, 83, 17, 111)  # the line meeting the picture goes too
    # a dark band at the top in one frame only is picture, not border
    frames[0, :10] = 0
    rows, cols = static_borders(frames)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 72, 0, 96)


@pytest.mark.timeout(300)
def test_video_copies_with_a_large_logo_a_third_trimmed_padding_or_rotation_flags_match(tmp_path, client):
    """Clips made with PyAV from one scene; ``video_phash`` and its dedup at their defaults."""
    from av_media import video

    scene = dict(seconds=6.0, source="testsrc2", size=(128, 96), rate=10)
    samples = {
        "original": video(**scene),
        "logo": video(**scene, video_filter="drawbox=x=76:y=6:w=46:h=30:color=red@1:t=fill"),  # 11% of the frame
        "trimmed_third": video("h264", "mkv", **{**scene, "seconds": 4.0}, start_s=2.0),
        "padded_white": video(**scene, video_filter="scale=96:72,pad=128:96:16:12:white"),
        # the same stream, flagged (display matrix) to be shown a quarter turned counter-clockwise
        "turned_by_flag": video(**scene, rotation=90),
        # stored a quarter turned clockwise, flagged to be shown turned back (upright)
        "upright_by_flag": video(**scene, video_filter="transpose=clock", rotation=90),
        "other": video(**{**scene, "source": "mandelbrot"}),
    }
    ext = {"trimmed_third": "mkv"}
    shard = make_shard(tmp_path / "v.tar", [(k, {ext.get(k, "mp4"): v, "txt": b"x"}) for k, v in samples.items()])
    recipe = mmcurate.Recipe.from_dict({
        "name": "video-dedup",
        "modalities": {"video": ["mp4", "mkv"], "text": ["txt"]},
        "steps": [{"annotate": "video_info"}, {"annotate": "video_phash"}, {"dedup": "video_phash", "keep": "highest duration_s"}],
    })
    mmcurate.curate(str(shard), recipe, tmp_path / "run", client=client, quiet=True)
    decided = {r["key"]: (r["kept"], r["reason"]) for r in mmcurate.open_run(tmp_path / "run").decisions.to_pylist()}
    dropped = {k for k, (kept, _) in decided.items() if not kept}
    assert dropped == {"logo", "trimmed_third", "padded_white", "turned_by_flag", "upright_by_flag"}, decided
    assert {decided[k][1] for k in dropped} == {"video_near_duplicate_of:original"}
