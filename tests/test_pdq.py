"""PDQ in numpy is bit-exact with Meta's reference implementation.

``REFERENCE`` holds the hash and quality that the reference C++ (ThreatExchange's
``pdqhashing.cpp``, through the ``pdqhash`` 0.2.8 binding built from source with gcc)
computed for each image of :func:`images`. Where ``pdqhash`` is importable, the same images
and more sizes are also compared live.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmcurate.steps.pdq import pdq_distance, pdq_hash, pdq_luma


def images() -> dict[str, np.ndarray]:
    """Deterministic RGB test images: noise, gradients, flat blocks, smooth blobs; odd sizes,
    and the 64x64 size the reference takes without filtering."""
    out = {}
    rng = np.random.default_rng(2026)
    for h, w in [(5, 5), (7, 300), (64, 64), (100, 133), (257, 129), (480, 640), (333, 1000)]:
        y, x = np.mgrid[0:h, 0:w]
        out[f"noise_{h}x{w}"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out[f"ramp_{h}x{w}"] = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)
        blocks = np.zeros((h, w, 3), np.uint8)
        blocks[h // 4 : h // 2, w // 3 :] = 200
        blocks[:, : w // 5, 1] = 90
        out[f"blocks_{h}x{w}"] = blocks
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        blob = 255 * np.exp(-(((y - cy) / (0.3 * h)) ** 2 + ((x - cx) / (0.2 * w)) ** 2))
        out[f"blob_{h}x{w}"] = np.stack([blob, 255 - blob, blob / 2], -1).astype(np.uint8)
    return out


REFERENCE = {
    "noise_5x5": ("962564d969da9b2696a59e2796a561d8695a64d99625649969da9b2696a59e27", 100),
    "ramp_5x5": ("318cd6b56e5b95a53c8d66d9318c9f27ce73ca72318c93a4ce73348d94a52499", 59),
    "blocks_5x5": ("c1f0c1f03e0f3e0f3e0fc1f0c3f03e0fc3f0c1f0c1f0c1f03e0f3e0f3e0fc1f0", 100),
    "blob_5x5": ("6b5a94a594a56b5a94a56b5a94a594a56b5a94a56b5ad4b594a56b5a94a56b5a", 3),
    "noise_7x300": ("18357da9afd64376d7e859dac039d8edaa3f271255c027123f46b62d08353c89", 100),
    "ramp_7x300": ("a56aab525a95d4ad5a95d4ad5a9554ad5a95ab52a56aab52a56a2b52a56a2b52", 44),
    "blocks_7x300": ("00008e3871c771c78e388e388e388e3871c78e388e3871c771c771c771c78e38", 100),
    "blob_7x300": ("5556aaa9aaa95556aaa9aaa9aaa95156eba9aaa915565556555655565556aaa9", 12),
    "noise_64x64": ("94d532de57337a6708c11cbe10f7e929c5f243cd66731aeae92f1502d93390b4", 100),
    "ramp_64x64": ("a9821ab6509e2cde266e590a97a9516f9867e9318909dabdda91b5dfe289942b", 2),
    "blocks_64x64": ("000071c78e388e3878c771c771c78e38000071c78e388e388e3c71c771c78e38", 100),
    "blob_64x64": ("9719d19c5cc816c9b7297d291e1984f98879db99579984d9a006ba66ba667e66", 3),
    "noise_100x133": ("d41c5d5f01f34575d28cbbba1a50bc1ce5289bd8c8d95773892a843b2aaabab3", 100),
    "ramp_100x133": ("cadc146bcd2c7ad329ba5463a157da20cd6f813a4e957ca032ab395c26f5a3ac", 25),
    "blocks_100x133": ("000071c78e388e3878c771c771c78e38387171c78e388e388e3c71c771c78e38", 100),
    "blob_100x133": ("b72c73cc94cce18c76ccab0c7acc168cb3cc72cc35cc31cc30cc35cccf33ce33", 6),
    "noise_257x129": ("752454b3a9943ceb8b939b681eebbba83439c8b6d3108cfff9a98131a7d8104e", 100),
    "ramp_257x129": ("5f2a007fbf95003f7fca001fffe5000ffff20007fff90003fffc0001fffe0000", 52),
    "blocks_257x129": ("630671c78e388e3871c771c771c78e38e31c71c78e388e3871c771c771c78e38", 100),
    "blob_257x129": ("fef1dfb1a471ffb192716cb1cb7184f16df1d271b431003100310031ac71ffce", 5),
    "noise_480x640": ("e1061f9d2678512d1569f1c65260f01735bfe02dc21a0bc4e36d9efffe0163f0", 100),
    "ramp_480x640": ("d6b02abad6346bffd61081553ea2835f3ea0d41a29f5d41aabf5fca0214f9ca0", 66),
    "blocks_480x640": ("0c7171c78e388e3871c771c771c78e3838e371c78e388e3871c771c771c78e38", 100),
    "blob_480x640": ("f4f9f266c3f94b262f99bc06f49940660b59afe6b51950a62a99a5197fe60019", 3),
    "noise_333x1000": ("933ba16cf332c486285bf1b2f0033f905b7e00db67843eeb1737c432d2b8bcaa", 100),
    "ramp_333x1000": ("d0d55594d0d55595d6d75595c0d47f95c0d56baad4d580802adfbf80752a807f", 100),
    "blocks_333x1000": ("f0fc71c78e388e381cf071c771c78e38c71c71c78e388e381c6371c771c78e38", 100),
    "blob_333x1000": ("6d566cad4552eaad4d52eaad5552aaad1552aaad5552aaad5552aaad55525552", 3),
}


def test_hashes_and_qualities_equal_the_reference_bit_for_bit():
    found = {name: pdq_hash(pdq_luma(img)) for name, img in images().items()}
    wrong = {name: (found[name], REFERENCE[name]) for name in REFERENCE if found[name] != REFERENCE[name]}
    assert not wrong
    assert len(found) == len(REFERENCE) == 28


def test_matches_pdqhash_live_where_installed():
    pdqhash = pytest.importorskip("pdqhash")
    rng = np.random.default_rng(7)
    cases = list(images().values())
    for _ in range(12):  # smooth random pictures of random sizes
        h, w = (int(v) for v in rng.integers(5, 700, 2))
        small = rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3)).astype(np.float64)
        cases.append(np.kron(small, np.ones((40, 40, 1)))[:h, :w].astype(np.uint8))
    for img in cases:
        vector, quality = pdqhash.compute(img)
        expected = f"{int(''.join(str(int(b)) for b in vector), 2):064x}"
        assert pdq_hash(pdq_luma(img)) == (expected, quality), img.shape


def test_tiny_images_hash_to_zero_with_no_quality():
    assert pdq_hash(pdq_luma(np.zeros((4, 100, 3), np.uint8))) == ("0" * 64, 0)


def test_distance_counts_differing_bits():
    assert pdq_distance("0" * 63 + "7", "0" * 64) == 3
    assert pdq_distance("f" * 64, "0" * 64) == 256
