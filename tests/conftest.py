"""Shared test helpers: tiny real images, real tar shards, one real Dask LocalCluster."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pytest
from PIL import Image

from mmcurate.io.tarwrite import write_tar

REPO = Path(__file__).resolve().parent.parent
DEMO_SHARDS = sorted((REPO / "shards").glob("demo-*.tar"))


def image_bytes(width: int = 96, height: int = 80, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A small random-noise image (each seed gives different bytes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def make_shard(path: Path, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> Path:
    """Write a tar with members ``KEY.EXT`` in order (names used as given)."""
    write_tar(path, [(f"{key}.{ext}", data) for key, members in samples for ext, data in members.items()])
    return path


def simple_samples(prefix: str, n: int, seed: int = 0) -> list[tuple[str, dict[str, bytes]]]:
    """``n`` valid image-text samples with distinct images."""
    return [
        (f"{prefix}{i:05d}", {"jpg": image_bytes(seed=seed * 100_000 + i), "txt": f"a photo number {i}".encode(), "json": b"{}"})
        for i in range(n)
    ]


def wait_for(path: Path, timeout: float = 60) -> None:
    """Wait until ``path`` exists (a scheduler file, say); ``TimeoutError`` after ``timeout`` s."""
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _weight_hash_cache(tmp_path_factory, monkeypatch):
    """Weight hashes (:mod:`mmcurate.io.filehash`) go to the session's temporary folder, never to ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(scope="session")
def client():
    """One real LocalCluster (2 worker processes) shared by the tests that need the engine."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="session")
def demo_default(tmp_path_factory, client):
    """The demo shards curated with the default recipe (the README's run), shared read-only."""
    import mmcurate

    return mmcurate.curate([str(p) for p in DEMO_SHARDS], "default", tmp_path_factory.mktemp("demo-default") / "run", client=client, quiet=True)
