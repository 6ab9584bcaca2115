"""Perceptual hashes: bit-identical to imagehash, batched, and through the real engine."""

from __future__ import annotations

import io
import sys

import imagehash
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageOps

import mmcurate
from conftest import REPO, make_shard, simple_samples
from mmcurate.steps import perceptual
from mmcurate.steps.annotators import get as get_annotator
from mmcurate.steps.annotators.phash import DHash, HashConfig, PHash
from mmcurate.decode import DecodeError
from mmcurate.decode.image import decode_image
from mmcurate.steps.sampleview import SampleView
from mmcurate.io.tarread import Member, Sample

sys.path.insert(0, str(REPO / "scripts"))
from synthetic import jpeg_bytes, photo_like, png_bytes  # noqa: E402

MODALITIES = {"image": ("jpg", "png")}


def _ref(fn, img: Image.Image) -> int:
    return int(str(fn(img)), 16)


def _png_roundtrip(img: Image.Image) -> Image.Image:
    decoded, fmt = decode_image(png_bytes(img))
    assert fmt == "PNG" and decoded.mode == img.mode
    return decoded


def _exif_jpeg(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def _varied_images() -> list[tuple[str, Image.Image]]:
    """About 200 images: noise, gradients, photo-like, grey, RGBA/P/LA/1 PNGs, tiny, extreme aspect, EXIF."""
    rng = np.random.default_rng(20240601)
    out: list[tuple[str, Image.Image]] = []

    def size(lo: int = 8, hi: int = 700) -> tuple[int, int]:
        return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))

    for i in range(40):
        w, h = size()
        out.append((f"noise{i}", Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))))
    for i in range(25):
        w, h = size()
        x = np.linspace(0, 1, w)[None, :]
        y = np.linspace(0, 1, h)[:, None]
        a, b = rng.uniform(-1, 1, 2)
        g = np.clip(127.5 + 127.5 * (a * x + b * y + 0.1 * np.sin(6 * x * y)), 0, 255).astype(np.uint8)
        out.append((f"gradient{i}", Image.fromarray(g) if i % 2 else Image.fromarray(np.stack([g, g[::-1], 255 - g], -1))))
    for i in range(50):
        w, h = size(16, 800)
        out.append((f"photo{i}", photo_like(rng, w, h)))
    for i in range(15):
        out.append((f"grey{i}", photo_like(rng, *size(16, 600)).convert("L")))
    for i in range(12):
        img = photo_like(rng, *size(16, 500)).convert("RGBA")
        alpha = rng.integers(0, 256, (img.height, img.width), dtype=np.uint8)
        img.putalpha(Image.fromarray(alpha))
        out.append((f"rgba_png{i}", _png_roundtrip(img)))
    for i in range(12):
        img = photo_like(rng, *size(16, 500)).quantize(colors=int(rng.integers(2, 256)))
        out.append((f"p_png{i}", _png_roundtrip(img)))
    for i in range(4):
        out.append((f"la_png{i}", _png_roundtrip(photo_like(rng, *size(16, 300)).convert("LA"))))
        out.append((f"bilevel_png{i}", _png_roundtrip(photo_like(rng, *size(16, 300)).convert("1"))))
    # Tiny, exact-size and extreme-aspect images (upscaling, no-op resizes, very long kernels).
    for name, (w, h) in {
        "1x1": (1, 1), "2x3": (2, 3), "8x8a": (8, 8), "8x8b": (8, 8), "9x8": (9, 8), "32x32": (32, 32),
        "33x31": (33, 31), "3x900": (3, 900), "900x3": (900, 3), "2000x20": (2000, 20), "20x2000": (20, 2000),
        "1500x40": (1500, 40), "4097x7": (4097, 7),
    }.items():
        out.append((f"tiny_or_thin_{name}", Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))))
    out.append(("black", Image.new("RGB", (320, 240))))
    out.append(("white", Image.new("L", (100, 50), 255)))
    out.append(("halves", Image.fromarray(np.repeat([[0] * 50 + [255] * 50], 64, axis=0).astype(np.uint8))))
    # EXIF orientations 2..8 (4 of them mirror), decoded upright like the engine does.
    for orientation in range(2, 9):
        data = _exif_jpeg(photo_like(rng, 160, 96), orientation)
        upright, _ = decode_image(data)
        assert upright.size == ((96, 160) if orientation >= 5 else (160, 96))
        out.append((f"exif{orientation}", upright))
    # Real JPEG round trips at a few qualities.
    for i in range(8):
        out.append((f"jpeg{i}", decode_image(jpeg_bytes(photo_like(rng, *size(48, 640)), quality=int(rng.integers(30, 95))))[0]))
    return out


@pytest.fixture(scope="module")
def images() -> list[tuple[str, Image.Image]]:
    found = _varied_images()
    assert len(found) >= 190
    return found


def _assert_same(names: list[str], got: np.ndarray, want: list[int]) -> None:
    assert got.dtype == np.uint64 and got.shape == (len(want),)
    bad = [(n, f"{int(g):016x}", f"{w:016x}") for n, g, w in zip(names, got, want) if int(g) != w]
    assert not bad, f"{len(bad)} of {len(want)} differ from imagehash: {bad[:10]}"


@pytest.mark.parametrize(
    ("batch", "reference"), [(perceptual.phash_batch, imagehash.phash), (perceptual.dhash_batch, imagehash.dhash)], ids=["phash", "dhash"]
)
def test_batch_hashes_are_bit_identical_to_imagehash(images, batch, reference):
    names = [n for n, _ in images]
    imgs = [img for _, img in images]
    _assert_same(names, batch(imgs), [_ref(reference, img) for img in imgs])
    # ... including when mirrored: flipping the thumbnail equals hashing ImageOps.mirror(img).
    _assert_same(names, batch(imgs, mirror=True), [_ref(reference, ImageOps.mirror(img)) for img in imgs])


def test_many_thumbnails_including_ties():
    """Thousands of 32x32 / 9x8 grey images (hashed as is: resize to the same size is a copy),
    many with few distinct values so that DCT coefficients tie with the median."""
    rng = np.random.default_rng(99)
    n = 3000
    phash_px = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
    phash_px[: n // 3] = rng.integers(0, 3, (n // 3, 32, 32), dtype=np.uint8) * 127
    phash_px[n // 3 : n // 3 + 50] = rng.integers(0, 256, (50, 1, 1), dtype=np.uint8)  # constant images
    dhash_px = rng.integers(0, 256, (n, 8, 9), dtype=np.uint8)
    dhash_px[: n // 3] = rng.integers(0, 2, (n // 3, 8, 9), dtype=np.uint8)
    for px, batch, pixels_fn, reference in (
        (phash_px, perceptual.phash_batch, perceptual.phash_pixels, imagehash.phash),
        (dhash_px, perceptual.dhash_batch, perceptual.dhash_pixels, imagehash.dhash),
    ):
        imgs = [Image.fromarray(p) for p in px]
        want = [_ref(reference, img) for img in imgs]
        names = [str(i) for i in range(n)]
        _assert_same(names, batch(imgs), want)
        _assert_same(names, pixels_fn(px), want)
        _assert_same(names, pixels_fn(px[:, :, ::-1]), [_ref(reference, ImageOps.mirror(img)) for img in imgs])


def test_batches_do_not_depend_on_their_neighbours(images):
    imgs = [img for _, img in images[:40]]
    whole = perceptual.phash_batch(imgs)
    assert np.array_equal(whole, np.concatenate([perceptual.phash_batch(imgs[i : i + 1]) for i in range(len(imgs))]))
    assert np.array_equal(perceptual.phash_batch(imgs[::-1]), whole[::-1])


def test_empty_batch_and_shape_checks():
    for fn in (perceptual.phash_batch, perceptual.dhash_batch):
        empty = fn([])
        assert empty.dtype == np.uint64 and empty.shape == (0,)
    with pytest.raises(ValueError, match="expected shape"):
        perceptual.phash_pixels(np.zeros((2, 8, 9), np.uint8))
    with pytest.raises(ValueError, match="expected shape"):
        perceptual.dhash_pixels(np.zeros((2, 32, 32), np.uint8))


def test_hamming_counts_differing_bits_with_and_without_bitwise_count():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**64, size=500, dtype=np.uint64)
    b = rng.integers(0, 2**64, size=500, dtype=np.uint64)
    a[:3] = [0, 2**64 - 1, 2**63]
    b[:3] = [2**64 - 1, 2**64 - 1, 0]
    want = np.array([bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)])
    assert want[:3].tolist() == [64, 0, 1]
    assert np.array_equal(perceptual.hamming(a, b), want)
    assert np.array_equal(perceptual._popcount_lut(a ^ b), want)
    # Broadcasting (one against many, all pairs) and plain Python ints.
    assert perceptual.hamming(a[:, None], b[None, :50]).shape == (500, 50)
    assert np.array_equal(perceptual._popcount_lut(a[:, None] ^ b[None, :50]), perceptual.hamming(a[:, None], b[None, :50]))
    assert int(perceptual.hamming(2**64 - 1, 0)) == 64
    assert int(perceptual._popcount_lut(np.uint64(2**64 - 1))) == 64


def test_mirrored_copy_matches_through_the_mirror_column(images):
    _, img = images[60]  # photo-like, not symmetric
    plain, mirrored = ImageOps.mirror(img), img
    h = perceptual.phash_batch([plain, mirrored])
    hm = perceptual.phash_batch([plain, mirrored], mirror=True)
    assert h[0] != h[1]
    assert h[0] == hm[1] and h[1] == hm[0]
    assert int(perceptual.hamming(h[0], hm[1])) == 0


# --------------------------------------------------------------------------- annotators


def _view(key: str, **members: bytes) -> SampleView:
    return SampleView(Sample(key, [Member(f"{key}.{ext}", ext, data) for ext, data in members.items()]), MODALITIES)


def test_sampleview_decodes_once_and_annotators_share_it():
    view = _view("a", jpg=jpeg_bytes(photo_like(np.random.default_rng(1), 120, 90)))
    first = view.image()
    assert view.image() is first  # cached: phash gets the very image image_info decoded
    bad = _view("b", jpg=b"not an image")
    with pytest.raises(DecodeError) as exc:
        bad.image()
    with pytest.raises(DecodeError) as again:
        bad.image()
    assert again.value is exc.value


@pytest.mark.parametrize(("cls", "reference"), [(PHash, imagehash.phash), (DHash, imagehash.dhash)], ids=["phash", "dhash"])
def test_annotator_rows(cls, reference):
    assert get_annotator(cls.name) is cls
    rng = np.random.default_rng(3)
    views = [
        _view("ok1", jpg=jpeg_bytes(photo_like(rng, 200, 150))),
        _view("corrupt", jpg=b"\xff\xd8 garbage"),
        _view("ok2", png=png_bytes(photo_like(rng, 64, 300).convert("P"))),
        _view("noimage", txt=b"caption only"),
    ]
    col, mcol = cls.name, f"{cls.name}_mirror"
    assert cls.columns_for(HashConfig()) == {col: pa.uint64()}  # a dedup asking for the mirror column is refused
    assert cls.columns_for(HashConfig(mirror=True)) == {col: pa.uint64(), mcol: pa.uint64()}

    exact = HashConfig(mode="exact")
    rows = cls(exact).annotate(views)
    assert [sorted(r) for r in rows] == [[col], ["error"], [col], ["error"]]
    assert rows[1]["error"].startswith("decode_error") and rows[3]["error"].startswith("missing_image")
    for i in (0, 2):
        img, _ = views[i].image()
        assert rows[i][col] == _ref(reference, img)

    rows = cls(HashConfig(mode="exact", mirror=True)).annotate(views)
    for i in (0, 2):
        img, _ = views[i].image()
        assert rows[i][col] == _ref(reference, img)
        assert rows[i][mcol] == _ref(reference, ImageOps.mirror(img))
    assert cls(exact).annotate([views[1]]) == [{"error": rows[1]["error"]}]
    assert cls().annotate([]) == []


@pytest.mark.timeout(180)
def test_phash_through_the_engine(tmp_path, client):
    src = tmp_path / "src"
    shard0 = simple_samples("a", 6, seed=1)
    shard0.insert(3, ("a_corrupt", {"jpg": b"\xff\xd8\xff\xe0 definitely not a jpeg", "txt": b"broken", "json": b"{}"}))
    shards = [make_shard(src / "000000.tar", shard0), make_shard(src / "000001.tar", simple_samples("b", 5, seed=2))]
    recipe = mmcurate.Recipe.from_dict({"name": "t", "steps": [{"annotate": "image_info"}, {"annotate": "phash", "mode": "exact", "mirror": True}]})
    out = tmp_path / "run"
    result = mmcurate.curate([str(s) for s in shards], recipe, out, client=client, quiet=True)
    assert (result.samples_in, result.kept, result.dropped) == (12, 11, 1)

    run = mmcurate.open_run(out)
    decisions = {r["key"]: r for r in run.decisions.to_pylist()}
    assert decisions["a_corrupt"]["kept"] is False
    assert decisions["a_corrupt"]["step"] == "image_info"
    assert decisions["a_corrupt"]["reason"].startswith("decode_error")

    table = run.annotations()
    assert table.schema.field("phash").type == pa.uint64()
    rows = {r["key"]: r for r in table.to_pylist()}
    originals = {key: members["jpg"] for key, members in shard0 + simple_samples("b", 5, seed=2)}
    assert rows["a_corrupt"].get("phash") is None  # dropped at image_info: phash never saw it
    hashed = {k for k, r in rows.items() if r.get("phash") is not None}
    assert hashed == set(originals) - {"a_corrupt"}
    for key in hashed:
        img, _ = decode_image(originals[key])
        assert rows[key]["phash"] == _ref(imagehash.phash, img), key
        assert rows[key]["phash_mirror"] == _ref(imagehash.phash, ImageOps.mirror(img)), key
