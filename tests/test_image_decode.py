"""The reduced-scale verification decode (``measure_image``) agrees with the full decode on
every image property and every failure, so ``image_info`` may use either."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmcurate.steps.annotators.image_info import ImageInfo
from mmcurate.decode import DecodeError
from mmcurate.decode.image import decode_image, measure_image
from mmcurate.steps.sampleview import SampleView
from mmcurate.io.tarread import Member, Sample

MODALITIES = {"image": ("jpg", "png", "webp"), "text": ("txt",)}


def _encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def _rotated_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(_photo(200, 120, orientation), "JPEG", exif=exif.tobytes())


def _good_images() -> dict[str, bytes]:
    photo = _photo(203, 117)
    return {
        "jpeg_rgb": _encode(photo, "JPEG", quality=85),
        "jpeg_gray": _encode(photo.convert("L"), "JPEG"),
        "jpeg_cmyk": _encode(photo.convert("CMYK"), "JPEG"),
        "jpeg_progressive": _encode(photo, "JPEG", progressive=True),
        "jpeg_444": _encode(photo, "JPEG", subsampling=0),
        "jpeg_tiny": _encode(_photo(5, 3), "JPEG"),
        "jpeg_exif_rotated_90": _rotated_jpeg(6),
        "jpeg_exif_mirrored": _rotated_jpeg(2),
        "png_palette": _encode(photo.convert("P"), "PNG"),
        "webp": _encode(photo, "WEBP"),
    }


@pytest.mark.parametrize("name", sorted(_good_images()))
def test_measure_matches_the_full_decode(name):
    data = _good_images()[name]
    img, fmt = decode_image(data)
    meta = measure_image(data)
    assert (meta.width, meta.height, meta.mode, meta.format) == (img.width, img.height, img.mode, fmt)


def test_exif_rotation_swaps_the_measured_size():
    meta = measure_image(_rotated_jpeg(6))
    assert (meta.width, meta.height) == (120, 200)


def _bad_images() -> dict[str, bytes]:
    good = _encode(_photo(320, 240), "JPEG", quality=90)
    return {
        "empty": b"",
        "not_an_image": b"certainly not an image",
        "header_only": good[:600],
        "cut_in_half": good[: len(good) // 2],
        "cut_near_the_end": good[:-40],
        "bad_marker": good[:2] + b"\xff\x01" + good[4:],
    }


@pytest.mark.parametrize("name", sorted(_bad_images()))
def test_measure_fails_exactly_like_the_full_decode(name):
    data = _bad_images()[name]
    with pytest.raises(DecodeError) as full:
        decode_image(data)
    with pytest.raises(DecodeError) as measured:
        measure_image(data)
    assert str(measured.value) == str(full.value)
    assert str(full.value).startswith("decode_error")


def test_pixel_limit_refuses_from_the_header_in_both():
    data = _encode(_photo(400, 300), "JPEG")
    for fn in (decode_image, measure_image):
        with pytest.raises(DecodeError, match="too large"):
            fn(data, max_pixels=1000)


def _view(data: bytes, pixels: bool) -> SampleView:
    return SampleView(Sample("k", [Member("k.jpg", "jpg", data)]), MODALITIES, pixels=pixels)


def test_image_info_rows_do_not_depend_on_the_decode_path():
    cases = list(_good_images().values()) + list(_bad_images().values())
    full = ImageInfo().annotate([_view(d, pixels=True) for d in cases])
    reduced = ImageInfo().annotate([_view(d, pixels=False) for d in cases])
    assert reduced == full
    assert sum("error" in r for r in full) == len(_bad_images())


def test_a_view_measured_first_still_gives_full_pixels():
    data = _good_images()["jpeg_rgb"]
    view = _view(data, pixels=False)
    meta = view.image_meta()
    img, _ = view.image()  # an annotator that did not declare needs_pixels still gets the full image
    assert img.size == (meta.width, meta.height) == (203, 117)
    assert np.array_equal(np.asarray(img), np.asarray(decode_image(data)[0]))
